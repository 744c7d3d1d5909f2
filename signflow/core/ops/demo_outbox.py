"""What `signflow demo` captured: every e-mail its mail catcher received and every
request its demo SMS/pager gateway received, one JSON line each in the instance
folder, so that the demo's admins see the pages and escalations happen.

Only a demo instance has one: the marker file `signflow demo` leaves in the instance
folder and the setting it leaves in the database must both be there."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.models import Setting

DEMO_MARKER = "demo-instance"
DEMO_SETTING = "demo.instance"
OUTBOX_FILE = "demo-messages.jsonl"
# The page shows the newest ones; the file keeps everything the demo ever caught.
SHOWN = 200


@dataclass(frozen=True)
class CaughtMessage:
    at: str  # ISO 8601, UTC
    channel: str  # "email", "sms"
    to: str
    subject: str
    text: str
    # "verified" (a Standard Webhooks signature checked), "received" (e-mail), or why refused.
    status: str


class DemoOutbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, *, now: datetime, channel: str, to: str, subject: str, text: str, status: str) -> None:
        line = json.dumps(asdict(CaughtMessage(at=now.isoformat(), channel=channel, to=to[:200],
                                               subject=subject[:300], text=text[:2000], status=status)))
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def read(self, limit: int = SHOWN) -> list[CaughtMessage]:
        """Newest first."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()[-limit:]
        messages = []
        for line in reversed(lines):
            try:
                messages.append(CaughtMessage(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut short by a crash: skip it, keep the rest
        return messages


def is_demo_instance(session: Session, instance_path: Path) -> bool:
    marked = session.scalar(select(Setting).where(Setting.name == DEMO_SETTING)) is not None
    return marked and (instance_path / DEMO_MARKER).is_file()


def outbox_of(instance_path: Path) -> DemoOutbox:
    return DemoOutbox(instance_path / OUTBOX_FILE)
