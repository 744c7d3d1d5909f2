"""Absences and their cover, and the "who is on call now and tonight" board."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from signflow.core.accounts import notices
from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Forbidden, InvalidInput
from signflow.core.i18n import N_
from signflow.core.requests import localtime as localtime
from signflow.core.requests import oncall as oncall
from signflow.models import AuditAction, OnCallGroup, Role, RotaAbsence, User

MAX_ABSENCE = timedelta(days=92)
MORNING = time(7, 0)  # before this, the night that began yesterday evening is "tonight"


ABSENCE = localtime.Span(MAX_ABSENCE, reversed="An absence ends after it starts.",
                         too_long="An absence lasts 92 days at most: mark a longer one in parts.",
                         over="This absence would already be over.")


def mark_absence(session: Session, *, actor: Actor, cover_user_id: int, starts_local: datetime,
                 ends_local: datetime, timezone: str, fold: int | None, now: datetime,
                 absent_user_id: int | None = None) -> RotaAbsence:
    """A physician is away between two wall-clock times (hospital zone) and
    `cover_user_id` is on call for their shifts meanwhile: the acting physician, or
    `absent_user_id` when an administrator records it for them (a sick call at night),
    in which case the physician is told."""
    by = acting_user(session, actor)
    user = _absent(session, by, absent_user_id)
    cover = session.get(User, cover_user_id)
    if cover is None or cover.role != Role.PHYSICIAN or not cover.active or cover.id == user.id:
        raise InvalidInput(N_("Choose the colleague who covers you.") if user.id == by.id
                           else N_("Choose the colleague who covers them."))
    starts, ends = ABSENCE.between(starts_local, ends_local, timezone, fold=fold, now=now)
    clash = session.scalar(select(RotaAbsence.id).where(
        RotaAbsence.user_id == user.id, RotaAbsence.starts_at < ends, RotaAbsence.ends_at > starts))
    if clash is not None:
        raise InvalidInput(N_("You already marked an absence at that time.") if user.id == by.id
                           else N_("An absence is already recorded for this physician at that time."))
    absence = RotaAbsence(user_id=user.id, cover_user_id=cover.id, starts_at=starts, ends_at=ends,
                          created_at=now)
    session.add(absence)
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.ROTA_ABSENCE_MARKED,
                 request_id=None, absence=absence.id, user=user.id, cover=cover.id,
                 starts_at=audit.rfc3339(starts), ends_at=audit.rfc3339(ends),
                 recorded_by=by.id)
    if user.id != by.id:
        tz = localtime.zone(timezone)
        notices.tell(session, user, now=now, path="/inbox/absence",
                     subject="An absence was recorded for you",
                     body=f"signflow: an administrator recorded you as away from "
                          f"{starts.astimezone(tz):%d/%m %H:%M} to {ends.astimezone(tz):%d/%m %H:%M}; "
                          f"{cover.display_name} is on call for your shifts meanwhile. If this is "
                          "wrong, tell the administrators.")
    return absence


def _absent(session: Session, by: User, absent_user_id: int | None) -> User:
    """Who is away: the acting physician, or the one an administrator names."""
    if absent_user_id is None or absent_user_id == by.id:
        if by.role != Role.PHYSICIAN:
            raise Forbidden(N_("Only a physician marks an absence."))
        return by
    if by.role != Role.ADMIN:
        raise Forbidden(N_("Only an administrator records a colleague's absence."))
    user = session.get(User, absent_user_id)
    if user is None or user.role != Role.PHYSICIAN or not user.active:
        raise InvalidInput(N_("Choose the physician who is away."))
    return user


def absences_for(session: Session, *, user: User, now: datetime) -> list[RotaAbsence]:
    """Current and coming absences of `user`, or that `user` covers."""
    return list(session.scalars(select(RotaAbsence).where(
        or_(RotaAbsence.user_id == user.id, RotaAbsence.cover_user_id == user.id),
        RotaAbsence.ends_at > now).order_by(RotaAbsence.starts_at)))


def current_and_coming(session: Session, *, now: datetime) -> list[RotaAbsence]:
    """Every absence not over yet (the administrators' rota page)."""
    return list(session.scalars(select(RotaAbsence).where(RotaAbsence.ends_at > now)
                                .order_by(RotaAbsence.starts_at)))


def cover_choices(session: Session, *, user: User | None = None) -> list[User]:
    """Active physicians (but `user`): who may cover, or be recorded away."""
    query = select(User).where(User.role == Role.PHYSICIAN, User.active.is_(True))
    if user is not None:
        query = query.where(User.id != user.id)
    return list(session.scalars(query.order_by(User.display_name)))


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


def tonight(now: datetime, timezone: str, night_starts: time) -> datetime:
    """The coming `night_starts` (SIGNFLOW_NIGHT_STARTS_AT) in the hospital's zone (now,
    if the night has begun)."""
    tz = localtime.zone(timezone)
    local = now.astimezone(tz)
    if local.time() >= night_starts or local.time() < MORNING:
        return now
    # An evening time (config refuses any other): the clocks never skip or repeat it.
    return localtime.instant(datetime.combine(local.date(), night_starts), tz, fold=0)


def board(session: Session, *, timezone: str, night_starts: time, now: datetime) -> Board:
    """Every group's primary, backup and head, now and tonight."""
    at = tonight(now, timezone, night_starts)
    groups = session.scalars(select(OnCallGroup).order_by(OnCallGroup.name))
    return Board(tonight_at=at, groups=tuple(
        GroupBoard(name=g.name, now=_rungs(session, g, now), tonight=_rungs(session, g, at)) for g in groups))
