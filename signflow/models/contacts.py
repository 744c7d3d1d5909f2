"""Contact channels (how a person is reached) and the delivery of each message through
one of them (who was paged, when, how, and whether it worked)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.enums import ChannelKind, DeliveryStatus
from signflow.models.tables import TextEnum, User, UTCDateTime


class ContactChannel(Base):
    """One address of a person: an e-mail address, a mobile number (E.164), a pager
    number. Used for pages only once `verified_at` is set, by a code sent through it
    (its keyed hash, expiry and tries kept here, as for the enrolment code)."""

    __tablename__ = "contact_channels"
    __table_args__ = (Index("ix_contact_channels_user", "user_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[ChannelKind] = mapped_column(TextEnum(ChannelKind, 20))
    address: Mapped[str] = mapped_column(String(320))
    # The owner's order: pages try the lowest position first.
    position: Mapped[int] = mapped_column(Integer, default=0)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()


class NotificationDelivery(Base):
    """One message of a notification job to one recipient through one channel."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("ix_deliveries_job", "job_id"),
        Index("ix_deliveries_request", "request_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    request_id: Mapped[int | None] = mapped_column(Integer)
    # None for an address that is no account (a destination's shared mailbox).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recipient: Mapped[str] = mapped_column(String(200))
    # Which recipient of the job this row belongs to (its channels share it).
    recipient_key: Mapped[str] = mapped_column(String(80))
    channel_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[ChannelKind] = mapped_column(TextEnum(ChannelKind, 20))
    address: Mapped[str] = mapped_column(String(320))
    position: Mapped[int] = mapped_column(Integer, default=0)
    # The ladder rung the page was for (None: not a page).
    level: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[DeliveryStatus] = mapped_column(TextEnum(DeliveryStatus, 20),
                                                   default=DeliveryStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the recipient opened the request after this page.
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
