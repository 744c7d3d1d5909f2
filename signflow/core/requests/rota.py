"""On-call groups and their rota, managed by administrators (audited)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor, JsonValue
from signflow.core.errors import Conflict, InvalidInput, NotFound
from signflow.core.i18n import N_
from signflow.core.requests import localtime as localtime
from signflow.core.requests.oncall import BACKUP, PRIMARY
from signflow.models import AuditAction, Destination, OnCallGroup, Role, RotaShift, User

MAX_SHIFT = timedelta(days=31)
SHIFT = localtime.Span(MAX_SHIFT, reversed="A shift ends after it starts.",
                       too_long="A shift lasts 31 days at most.",
                       over="This shift would already be over.")

RowT = TypeVar("RowT", OnCallGroup, Destination, RotaShift)


def _added(session: Session, row: RowT, key: str, *, actor: Actor, now: datetime,
           action: AuditAction, **details: JsonValue) -> RowT:
    """`row` stored and its audit entry written with it, in the caller's transaction;
    flushed first so that the entry names the new row's id (under `key`)."""
    session.add(row)
    session.flush()
    audit.append(session, now=now, actor=actor, action=action, request_id=None, **{key: row.id}, **details)
    return row


def _physician(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.role != Role.PHYSICIAN:
        raise InvalidInput(N_("Choose a physician."))
    return user


def _unused_name(session: Session, column: InstrumentedAttribute[str], name: str, *,
                 missing: str, taken: str) -> str:
    """`name` with its whitespace collapsed, refused (whole sentences, for the
    catalogue) when empty, longer than 200 characters or taken."""
    name = " ".join(name.split())
    if not name or len(name) > 200:
        raise InvalidInput(missing)
    if session.scalar(select(column).where(column == name)) is not None:
        raise Conflict(taken)
    return name


def create_group(session: Session, *, actor: Actor, name: str, head_user_id: int | None,
                 now: datetime) -> OnCallGroup:
    name = _unused_name(session, OnCallGroup.name, name,
                        missing="A group needs a name (200 characters at most).",
                        taken="A group with this name exists.")
    head = _physician(session, head_user_id) if head_user_id is not None else None
    head_id = head.id if head else None
    return _added(session, OnCallGroup(name=name, head_user_id=head_id), "group", actor=actor, now=now,
                  action=AuditAction.ROTA_GROUP_CREATED, name=name, head=head_id)


def create_destination(session: Session, *, actor: Actor, name: str, email: str | None,
                       now: datetime) -> Destination:
    name = _unused_name(session, Destination.name, name,
                        missing="A destination needs a name (200 characters at most).",
                        taken="A destination with this name exists.")
    return _added(session, Destination(name=name, email=email or None), "destination", actor=actor,
                  now=now, action=AuditAction.DESTINATION_CREATED, name=name)


def add_shift(session: Session, *, actor: Actor, group_id: int, user_id: int, level: int,
              starts_at: datetime, ends_at: datetime, now: datetime) -> RotaShift:
    group = session.get(OnCallGroup, group_id)
    if group is None:
        raise InvalidInput(N_("Choose a group."))
    user = _physician(session, user_id)
    if level not in (PRIMARY, BACKUP):
        raise InvalidInput(N_("A shift is primary or backup."))
    SHIFT.check(starts_at, ends_at, now=now)
    twice = session.scalar(select(RotaShift.id).where(
        RotaShift.group_id == group.id, RotaShift.user_id == user.id,
        RotaShift.starts_at < ends_at, RotaShift.ends_at > starts_at).limit(1))
    if twice is not None:
        raise InvalidInput(N_("This physician already has a shift in this group at that time."))
    shift = RotaShift(group_id=group.id, user_id=user.id, level=level, starts_at=starts_at,
                      ends_at=ends_at)
    return _added(session, shift, "shift", actor=actor, now=now, action=AuditAction.ROTA_SHIFT_ADDED,
                  group=group.id, user=user.id, level=level, starts_at=audit.rfc3339(starts_at),
                  ends_at=audit.rfc3339(ends_at))


def add_shift_local(session: Session, *, actor: Actor, group_id: int, user_id: int, level: int,
                    starts_local: datetime, ends_local: datetime, timezone: str, fold: int | None,
                    now: datetime) -> RotaShift:
    """A shift typed as wall-clock times in the hospital's zone: a time the clocks skip
    is refused, one that happens twice needs `fold` (0 first occurrence, 1 second)."""
    starts, ends = SHIFT.between(starts_local, ends_local, timezone, fold=fold, now=now)
    return add_shift(session, actor=actor, group_id=group_id, user_id=user_id, level=level,
                     starts_at=starts, ends_at=ends, now=now)


def remove_shift(session: Session, *, actor: Actor, shift_id: int, now: datetime) -> None:
    shift = session.get(RotaShift, shift_id)
    if shift is None:
        raise NotFound(N_("No such shift."))
    audit.append(session, now=now, actor=actor, action=AuditAction.ROTA_SHIFT_REMOVED, shift=shift.id,
                 group=shift.group_id, user=shift.user_id)
    session.delete(shift)
    session.flush()


def current_and_upcoming(session: Session, *, now: datetime) -> list[RotaShift]:
    return list(session.scalars(
        select(RotaShift).where(RotaShift.ends_at > now)
        .order_by(RotaShift.group_id, RotaShift.starts_at, RotaShift.level)
    ))
