"""Signature requests, their route of on-call groups, and the rota that staffs the groups."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.accounts import Destination, User
from signflow.models.columns import TextEnum, UTCDateTime
from signflow.models.enums import RequestState, Urgency


class OnCallGroup(Base):
    __tablename__ = "oncall_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    head_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    head: Mapped[User | None] = relationship()


class RotaShift(Base):
    """A physician on call for a group between two instants, at a ladder level.

    Level 0 is the primary on call, 1 the backup; the group's head of
    department is the last rung (see core.oncall).
    """

    __tablename__ = "rota_shifts"
    __table_args__ = (Index("ix_rota_group_time", "group_id", "starts_at", "ends_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    level: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()
    group: Mapped[OnCallGroup] = relationship()


class SignatureRequest(Base):
    __tablename__ = "requests"
    __table_args__ = (
        Index("ix_requests_state_deadline", "state", "deadline_at"),
        Index("ix_requests_technician", "technician_id", "created_at"),
        Index("ix_requests_destination", "destination_id", "state"),
        # The statistics read a period of uploads (signflow.core.stats.queries).
        Index("ix_requests_created", "created_at", "group_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    technician_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The group whose signature is awaited now: route[step] (a request may need
    # signatures from several groups, in order).
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))
    step: Mapped[int] = mapped_column(Integer, default=0)
    # The physician who took the request (or was delegated it) at this step.
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"))
    title: Mapped[str] = mapped_column(String(200))
    urgency: Mapped[Urgency] = mapped_column(TextEnum(Urgency, 20))
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[RequestState] = mapped_column(TextEnum(RequestState, 20), default=RequestState.PENDING)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    filename: Mapped[str] = mapped_column(String(200))
    original_sha256: Mapped[str] = mapped_column(String(64))
    # The normalised bytes: what is previewed and what is signed.
    document_sha256: Mapped[str] = mapped_column(String(64))
    page_count: Mapped[int] = mapped_column(Integer)
    removed_content: Mapped[str] = mapped_column(Text, default="")
    stamp_position: Mapped[str | None] = mapped_column(String(100))
    signed_sha256: Mapped[str | None] = mapped_column(String(64))
    signed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    declined_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decline_reason: Mapped[str | None] = mapped_column(Text)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(Text)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    technician: Mapped[User] = relationship(foreign_keys=[technician_id])
    group: Mapped[OnCallGroup] = relationship()
    destination: Mapped[Destination] = relationship()
    signed_by: Mapped[User | None] = relationship(foreign_keys=[signed_by_id])
    declined_by: Mapped[User | None] = relationship(foreign_keys=[declined_by_id])
    acknowledged_by: Mapped[User | None] = relationship(foreign_keys=[acknowledged_by_id])
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id])
    route: Mapped[list[RouteStep]] = relationship(
        order_by="RouteStep.position", cascade="all, delete-orphan", lazy="selectin")


class RouteStep(Base):
    """One group of a request's route, in signing order (position 0 signs first)."""

    __tablename__ = "request_route"

    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"),
                                            primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))
