"""The domain. Nothing under this package imports Flask (tests/test_architecture.py)."""
