"""Notification transports (SMTP, the signed SMS/pager gateway) and the dispatch of a
message to the sender of its channel kind (`dispatch.py`); Web Push plugs in there."""
