"""Web Push subscriptions: one row per device (browser) of a user.

A row is usable only once `verified_at` is set: the physician typed the code that
the subscription itself delivered (the channel proved it reaches them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from signflow.db import Base
from signflow.models.tables import UTCDateTime


class PushSubscription(Base):
    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The push service's URL for this device (RFC 8030): https, public address.
    endpoint: Mapped[str] = mapped_column(Text, unique=True)
    # The browser's P-256 public key and auth secret (RFC 8291), base64url.
    p256dh: Mapped[str] = mapped_column(String(100))
    auth: Mapped[str] = mapped_column(String(40))
    # What the physician sees in their device list ("Chrome on Android").
    user_agent_label: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Keyed hash of the verification code the subscription was sent; cleared once verified.
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure: Mapped[str | None] = mapped_column(String(300))
    # The push service said 404/410: the browser dropped the subscription; never used again.
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
