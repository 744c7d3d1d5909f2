"""Absences and their cover, and the "who is on call now and tonight" board."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Forbidden, InvalidInput
from signflow.core.i18n import N_
from signflow.core.requests import localtime as localtime
from signflow.core.requests import oncall as oncall
from signflow.models import AuditAction, OnCallGroup, Role, RotaAbsence, User

MAX_ABSENCE = timedelta(days=92)
NIGHT_STARTS = time(22, 0)  # "tonight" on the board: the coming 22:00, local time


def mark_absence(session: Session, *, actor: Actor, cover_user_id: int, starts_local: datetime,
                 ends_local: datetime, timezone: str, fold: int | None, now: datetime) -> RotaAbsence:
    """The acting physician is away between two wall-clock times (hospital zone) and
    `cover_user_id` is on call for their shifts meanwhile."""
    user = acting_user(session, actor)
    if user.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only a physician marks an absence."))
    cover = session.get(User, cover_user_id)
    if cover is None or cover.role != Role.PHYSICIAN or not cover.active or cover.id == user.id:
        raise InvalidInput(N_("Choose the colleague who covers you."))
    tz = localtime.zone(timezone)
    starts = localtime.instant(starts_local, tz, fold=fold)
    ends = localtime.instant(ends_local, tz, fold=fold)
    if ends <= starts:
        raise InvalidInput(N_("An absence ends after it starts."))
    if ends - starts > MAX_ABSENCE:
        raise InvalidInput(N_("An absence lasts 92 days at most: mark a longer one in parts."))
    if ends <= now:
        raise InvalidInput(N_("This absence would already be over."))
    clash = session.scalar(select(RotaAbsence.id).where(
        RotaAbsence.user_id == user.id, RotaAbsence.starts_at < ends, RotaAbsence.ends_at > starts))
    if clash is not None:
        raise InvalidInput(N_("You already marked an absence at that time."))
    absence = RotaAbsence(user_id=user.id, cover_user_id=cover.id, starts_at=starts, ends_at=ends,
                          created_at=now)
    session.add(absence)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.ROTA_ABSENCE_MARKED,
                 request_id=None, absence=absence.id, user=user.id, cover=cover.id,
                 starts_at=audit.rfc3339(starts), ends_at=audit.rfc3339(ends))
    return absence


def absences_for(session: Session, *, user: User, now: datetime) -> list[RotaAbsence]:
    """Current and coming absences of `user`, or that `user` covers."""
    return list(session.scalars(select(RotaAbsence).where(
        or_(RotaAbsence.user_id == user.id, RotaAbsence.cover_user_id == user.id),
        RotaAbsence.ends_at > now).order_by(RotaAbsence.starts_at)))


def current_and_coming(session: Session, *, now: datetime) -> list[RotaAbsence]:
    """Every absence not over yet (the administrators' rota page)."""
    return list(session.scalars(select(RotaAbsence).where(RotaAbsence.ends_at > now)
                                .order_by(RotaAbsence.starts_at)))


def cover_choices(session: Session, *, user: User) -> list[User]:
    return [u for u in session.scalars(select(User).where(
        User.role == Role.PHYSICIAN, User.active.is_(True), User.id != user.id)
        .order_by(User.display_name))]


@dataclass(frozen=True)
class Rung:
    label: str  # primary, backup, head
    people: tuple[str, ...]


@dataclass(frozen=True)
class GroupBoard:
    name: str
    now: tuple[Rung, ...]
    tonight: tuple[Rung, ...]


@dataclass(frozen=True)
class Board:
    tonight_at: datetime
    groups: tuple[GroupBoard, ...]


def _rungs(session: Session, group: OnCallGroup, at: datetime) -> tuple[Rung, ...]:
    rungs = [Rung(label, tuple(u.display_name for u in oncall.on_call(session, group.id, at, level=lvl)))
             for label, lvl in (("primary", oncall.PRIMARY), ("backup", oncall.BACKUP))]
    head = group.head
    rungs.append(Rung("head", (head.display_name,) if head is not None and head.active else ()))
    return tuple(rungs)


def tonight(now: datetime, timezone: str) -> datetime:
    """The coming NIGHT_STARTS in the hospital's zone (now, if the night has begun)."""
    tz = localtime.zone(timezone)
    local = now.astimezone(tz)
    if local.time() >= NIGHT_STARTS or local.time() < time(7, 0):
        return now
    return localtime.instant(datetime.combine(local.date(), NIGHT_STARTS), tz, fold=0)


def board(session: Session, *, timezone: str, now: datetime) -> Board:
    """Every group's primary, backup and head, now and tonight."""
    at = tonight(now, timezone)
    groups = session.scalars(select(OnCallGroup).order_by(OnCallGroup.name))
    return Board(tonight_at=at, groups=tuple(
        GroupBoard(name=g.name, now=_rungs(session, g, now), tonight=_rungs(session, g, at)) for g in groups))
