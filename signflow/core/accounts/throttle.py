"""Login throttling that never locks the owner out (OWASP "device cookies").

Failures are counted per (typed account name, source address) and per source
address, so an attacker slows down only himself: the owner logging in from
another address is not affected, and a device that completed a full login for
the account before (the web layer verifies its signed device cookie and hands
its id here) is counted on its own and exempt from both. Counters are keyed by
a keyed hash of the typed name, so an unknown name is throttled exactly like a
real one and the table names no one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from signflow.models import LoginThrottle

FREE_PER_ACCOUNT_SOURCE = 5
FREE_PER_SOURCE = 20
FREE_PER_DEVICE = 5
MAX_DELAY_SECONDS = 300
# A counter nobody fed for this long starts over.
FORGET_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class Attempt:
    """Who is trying: the typed account name, the source address and, when the web
    layer verified a device cookie for that very name, the device's id."""

    key: bytes
    username: str
    source: str | None
    device: str | None = None

    def _digest(self, *parts: str) -> str:
        return hmac.new(self.key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    def counters(self) -> list[tuple[str, int]]:
        name = self.username.strip().lower()
        if self.device:
            return [(self._digest("device", name, self.device), FREE_PER_DEVICE)]
        source = self.source or "-"
        return [(self._digest("account+source", name, source), FREE_PER_ACCOUNT_SOURCE),
                (self._digest("source", source), FREE_PER_SOURCE)]


def name_digest(key: bytes, username: str) -> str:
    """A keyed hash of a typed user name (for the audit log, when it is no account)."""
    return hmac.new(key, b"name\0" + username.strip().lower().encode(), hashlib.sha256).hexdigest()


def delay(failures: int, free: int) -> int:
    """Seconds to wait after `failures` failures: none for the first `free`, then
    doubling from 5 s, capped."""
    if failures < free:
        return 0
    return int(min(MAX_DELAY_SECONDS, 2 ** min(failures - free, 16) * 5))


def remaining(session: Session, attempt: Attempt, *, now: datetime) -> int:
    """Seconds before `attempt` may be tried (0: now)."""
    wait = 0.0
    for key, free in attempt.counters():
        row = session.get(LoginThrottle, key)
        if row is None or now - row.last_failure_at > FORGET_AFTER:
            continue
        until = row.last_failure_at + timedelta(seconds=delay(row.failures, free))
        wait = max(wait, (until - now).total_seconds())
    return int(wait) + 1 if wait > 0 else 0


def record_failure(session: Session, attempt: Attempt, *, now: datetime) -> None:
    for key, _free in attempt.counters():
        # Locked and read again: `remaining` read it before the password hash, and two
        # failures at once must count two (SQLite: this takes the write lock).
        row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
        if row is None:
            session.add(LoginThrottle(key=key, failures=1, last_failure_at=now))
        else:
            row.failures = 1 if now - row.last_failure_at > FORGET_AFTER else row.failures + 1
            row.last_failure_at = now
    session.flush()


def record_success(session: Session, attempt: Attempt) -> None:
    """A full login clears the owner's own counters; the per-source one stays (one
    good account must not reset a source spraying over the others)."""
    keys = [key for key, _free in attempt.counters()]
    for key in keys[:1]:
        row = session.get(LoginThrottle, key)
        if row is not None:
            session.delete(row)
    session.flush()
