"""Calls per API token and minute. In the database by default (every app instance
shares it, core.accounts.ratelimit); in Redis when SIGNFLOW_REDIS_URL is set, through
the `limits` package (a busy site then keeps the counting off the database)."""

from __future__ import annotations

import contextlib
import math
from datetime import datetime, timedelta
from typing import Protocol

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.orm import Session

from signflow.core.accounts import ratelimit
from signflow.core.errors import ServiceUnavailable, Throttled
from signflow.core.i18n import N_

MESSAGE = N_("Too many calls with this token: wait for the Retry-After seconds and try again.")


class ApiLimiter(Protocol):
    def hit(self, session: Session, token_id: int, *, now: datetime) -> None:
        """Count one call; Throttled past the limit."""

    def count_again(self, session: Session, token_id: int, *, now: datetime) -> None:
        """The call counted by `hit` was refused and its transaction rolled back: count it
        again in the refusal's own transaction, without refusing."""


class DatabaseLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute

    def hit(self, session: Session, token_id: int, *, now: datetime) -> None:
        ratelimit.hit(session, f"api:{token_id}", limit=self.per_minute,
                      window=timedelta(minutes=1), now=now, message=MESSAGE)

    def count_again(self, session: Session, token_id: int, *, now: datetime) -> None:
        # Otherwise calls that fail (a bad upload, an unknown id) would never be limited.
        with contextlib.suppress(Throttled):  # the refusal stands; the count is what matters
            self.hit(session, token_id, now=now)


class RedisLimiter:
    """Fixed one-minute windows kept by Redis (its clock, shared by every instance)."""

    def __init__(self, url: str, per_minute: int) -> None:
        self.storage = storage_from_string(url)
        self.strategy = FixedWindowRateLimiter(self.storage)
        self.item = RateLimitItemPerMinute(per_minute)

    def hit(self, session: Session, token_id: int, *, now: datetime) -> None:
        try:
            allowed = self.strategy.hit(self.item, "signflow-api", str(token_id))
            if allowed:
                return
            reset = self.strategy.get_window_stats(self.item, "signflow-api", str(token_id)).reset_time
        except self.storage.base_exceptions as exc:
            raise ServiceUnavailable(N_("The rate limiter (Redis) cannot be reached: try again "
                                        "in a moment.")) from exc
        # Redis keeps the window on its clock; the app's `now` is the same wall clock in
        # production, and a window never outlasts its minute.
        raise Throttled(MESSAGE, retry_after=max(1, min(60, math.ceil(reset - now.timestamp()))))

    def count_again(self, session: Session, token_id: int, *, now: datetime) -> None:
        """Redis counted the call outside the database transaction: it still counts."""


def make_limiter(redis_url: str | None, per_minute: int) -> ApiLimiter:
    if redis_url:
        return RedisLimiter(redis_url, per_minute)
    return DatabaseLimiter(per_minute)
