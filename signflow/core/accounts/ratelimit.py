"""Calls counted per key in fixed windows, in the database (app instances share no
memory). The counting row is locked for the transaction, so concurrent calls of one
key serialise; the caller commits the count even when it refuses (Throttled does)."""

from __future__ import annotations

from datetime import datetime, timedelta
from math import ceil

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from signflow.core.errors import Throttled
from signflow.core.i18n import N_
from signflow.models import RateLimit


def hit(session: Session, key: str, *, limit: int, window: timedelta, now: datetime,
        message: str = N_("Too many requests: wait a moment and try again.")) -> None:
    """Count one call of `key`; Throttled (with the seconds to wait) past `limit`
    calls in the current window."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(RateLimit).values(key=key[:64], window_start=now, calls=0)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    row = session.get(RateLimit, key[:64], with_for_update=True, populate_existing=True)
    if row is None:  # inserted just above, or already there: cannot happen
        raise RuntimeError("rate limit row vanished")
    if now - row.window_start >= window or now < row.window_start:
        row.window_start, row.calls = now, 0
    row.calls += 1
    session.flush()
    if row.calls > limit:
        wait = (row.window_start + window - now).total_seconds()
        raise Throttled(message, retry_after=max(1, ceil(wait)))
