"""Notification channels (SMTP, gateway webhook) behind one small interface."""
