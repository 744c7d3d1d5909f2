"""Calls per API token and minute. In the database by default (every app instance
shares it, core.accounts.ratelimit); in Redis when SIGNFLOW_REDIS_URL is set, through
the `limits` package (a busy site then keeps the counting off the database)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.orm import Session

from signflow.core.accounts import ratelimit
from signflow.core.errors import ServiceUnavailable, Throttled

MESSAGE = "Too many calls with this token: wait for the Retry-After seconds and try again."


class ApiLimiter(Protocol):
    def hit(self, session: Session, token_id: int, *, now: datetime) -> None:
        """Count one call; Throttled past the limit."""


class DatabaseLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute

    def hit(self, session: Session, token_id: int, *, now: datetime) -> None:
        ratelimit.hit(session, f"api:{token_id}", limit=self.per_minute,
                      window=timedelta(minutes=1), now=now, message=MESSAGE)


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
            raise ServiceUnavailable("The rate limiter (Redis) cannot be reached: try again "
                                     "in a moment.") from exc
        # Redis keeps the window on its clock; the app's `now` is the same wall clock in
        # production, and a window never outlasts its minute.
        raise Throttled(MESSAGE, retry_after=max(1, min(60, math.ceil(reset - now.timestamp()))))


def make_limiter(redis_url: str | None, per_minute: int) -> ApiLimiter:
    if redis_url:
        return RedisLimiter(redis_url, per_minute)
    return DatabaseLimiter(per_minute)
