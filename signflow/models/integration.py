"""Hospital systems talking to signflow: idempotent submissions, the external reference
a submitting system gave a request, outbound webhook / FHIR subscriptions and their
delivery log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.columns import TextEnum, UTCDateTime
from signflow.models.enums import HookKind, HookStatus


class IdempotencyKey(Base):
    """The first answer to an `Idempotency-Key` of one token: a retry gets the same
    request; the same key with another body is refused (`body_sha256` differs)."""

    __tablename__ = "idempotency_keys"

    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RequestReference(Base):
    """The identifier the submitting system knows a request by (its order number)."""

    __tablename__ = "request_references"
    __table_args__ = (Index("ix_request_references_value", "value"),)

    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"),
                                            primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class WebhookSubscription(Base):
    """An endpoint told about the requests of one destination or of one submitting
    account (a technician or a lab system): Standard Webhooks events, or the FHIR
    Bundle of each delivered document posted as a transaction (kind `fhir`)."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[HookKind] = mapped_column(TextEnum(HookKind, 10))
    url: Mapped[str] = mapped_column(String(2000))
    # `whsec_...`, kept sealed under the master key (web.admin never shows it again).
    secret_sealed: Mapped[str] = mapped_column(Text)
    destination_id: Mapped[int | None] = mapped_column(ForeignKey("destinations.id"))
    technician_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Space-separated event types (request.created ...).
    events: Mapped[str] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one subscription, retried with backoff until it is answered 2xx
    or 24 h have passed; `message_id` is the same for every attempt (the receiver drops
    duplicates by it)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(60), unique=True)
    event: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[HookStatus] = mapped_column(TextEnum(HookStatus, 10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    subscription: Mapped[WebhookSubscription] = relationship()


class WebhookAttempt(Base):
    """One POST of a delivery: when, and what the receiver answered (the admins' log)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
