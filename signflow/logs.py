"""Log records in UTC, one line each: control characters from user input are escaped
so that nobody can forge a log line (ASVS 16.4.1)."""

from __future__ import annotations

import logging
import time


class OneLineUTCFormatter(logging.Formatter):
    @staticmethod
    def converter(seconds: float | None = None) -> time.struct_time:
        return time.gmtime(seconds)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def configure(level: int = logging.INFO) -> None:
    """Install the formatter on the root logger unless a host (gunicorn, pytest) did."""
    root = logging.getLogger()
    if root.handlers:
        for handler in root.handlers:
            if type(handler.formatter) is logging.Formatter or handler.formatter is None:
                handler.setFormatter(_formatter())
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter())
    root.addHandler(handler)
    root.setLevel(level)


def _formatter() -> OneLineUTCFormatter:
    return OneLineUTCFormatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s",
                               datefmt="%Y-%m-%dT%H:%M:%S")
