"""Tables of the rota as hospitals keep it: the escalation policy per group and
urgency, physicians' absences and their covers, and what the worker did once for a
request (repeat pages, handovers, acknowledgement reminders)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from signflow.db import Base
from signflow.models.enums import FollowUpKind, Urgency
from signflow.models.tables import OnCallGroup, TextEnum, User, UTCDateTime


class EscalationPolicy(Base):
    """How long a request of one urgency waits at each rung of one group's ladder,
    and whether the rung is paged a second time before it escalates."""

    __tablename__ = "escalation_policies"
    __table_args__ = (UniqueConstraint("group_id", "urgency", name="uq_escalation_policy"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("oncall_groups.id"))
    urgency: Mapped[Urgency] = mapped_column(TextEnum(Urgency, 20))
    # Minutes at rung 0, 1, 2... comma-separated ("5,5,10"), one per ladder level.
    rung_minutes: Mapped[str] = mapped_column(String(200))
    # Page the same rung again this many minutes into it (NULL: no repeat).
    repeat_after_minutes: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    group: Mapped[OnCallGroup] = relationship()


class RotaAbsence(Base):
    """A physician away between two instants; `cover` is on call for the absent
    physician's shifts during that window."""

    __tablename__ = "rota_absences"
    __table_args__ = (Index("ix_rota_absences_user_time", "user_id", "starts_at", "ends_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    cover_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    cover: Mapped[User] = relationship(foreign_keys=[cover_user_id])


class RequestFollowUp(Base):
    """One thing the worker did once for a request: `ref` says which (the ended shift
    of a handover, step * 100 + rung of a repeat page, 0 for a reminder). The unique
    key is what keeps two workers from doing it twice."""

    __tablename__ = "request_follow_ups"
    __table_args__ = (UniqueConstraint("request_id", "kind", "ref", name="uq_request_follow_up"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    kind: Mapped[FollowUpKind] = mapped_column(TextEnum(FollowUpKind, 20))
    ref: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
