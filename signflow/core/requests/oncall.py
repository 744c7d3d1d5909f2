"""Who is on call for a group at an instant, and the escalation ladder.

Ladder: level 0 = the primary on call, level 1 = the backup, last level = the
group's head of department. A request escalates one rung per missed deadline.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from signflow.models import OnCallGroup, Role, RotaAbsence, RotaShift, User

PRIMARY, BACKUP, HEAD = 0, 1, 2
LADDER_LEVELS = 3


def _covering(session: Session, at: datetime, *where: ColumnElement[bool]) -> list[RotaShift]:
    return list(session.scalars(
        select(RotaShift).where(RotaShift.starts_at <= at, RotaShift.ends_at > at, *where)
        .order_by(RotaShift.level, RotaShift.user_id)))


def _absences(session: Session, at: datetime) -> dict[int, RotaAbsence]:
    """Who is away at `at`, with the colleague covering them."""
    rows = session.scalars(select(RotaAbsence).where(
        RotaAbsence.starts_at <= at, RotaAbsence.ends_at > at).order_by(RotaAbsence.id))
    return {a.user_id: a for a in rows}


def stand_in(user: User, absences: dict[int, RotaAbsence]) -> User | None:
    """Who is on call for `user`'s shift: the user, or the cover of an absent one (and
    the cover's own cover, should they be away too); None when that leads back round."""
    seen: set[int] = set()
    while user.id in absences:
        if user.id in seen:
            return None
        seen.add(user.id)
        user = absences[user.id].cover
    return user


def on_call(session: Session, group_id: int, at: datetime, *, level: int | None = None) -> list[User]:
    """Active physicians on call for a group at `at` (at one rung, or any rung): those
    whose shift covers `at`, an absent physician replaced by their cover."""
    where = [RotaShift.group_id == group_id]
    if level is not None:
        where.append(RotaShift.level == level)
    absences = _absences(session, at)
    people = [stand_in(shift.user, absences) for shift in _covering(session, at, *where)]
    return list(dict.fromkeys(p for p in people
                              if p is not None and p.active and p.role == Role.PHYSICIAN))


def recipients_for_level(session: Session, group: OnCallGroup, level: int, at: datetime) -> list[User]:
    """Whom to notify when a request reaches `level`."""
    if level >= HEAD:
        head = group.head
        return [head] if head is not None and head.active else on_call(session, group.id, at)
    users = on_call(session, group.id, at, level=level)
    # Nobody at that rung: fall through to whoever is on call rather than to no one.
    return users or on_call(session, group.id, at)


def may_act_for_group(session: Session, user: User, group: OnCallGroup, at: datetime) -> bool:
    """A physician may open and sign a group's requests while on call for it (any rung);
    the head of department always may."""
    if user.role != Role.PHYSICIAN or not user.active:
        return False
    if group.head_user_id == user.id:
        return True
    return any(u.id == user.id for u in on_call(session, group.id, at))


def groups_on_call(session: Session, user: User, at: datetime) -> list[int]:
    """The groups `user` is on call for at `at` (own shifts, or covering an absent
    colleague's) or head of."""
    covered = select(RotaAbsence.user_id).where(
        RotaAbsence.cover_user_id == user.id, RotaAbsence.starts_at <= at, RotaAbsence.ends_at > at)
    candidates = {s.group_id for s in _covering(
        session, at, or_(RotaShift.user_id == user.id, RotaShift.user_id.in_(covered)))}
    mine = {g for g in candidates if any(u.id == user.id for u in on_call(session, g, at))}
    heads = select(OnCallGroup.id).where(OnCallGroup.head_user_id == user.id)
    return sorted(mine | set(session.scalars(heads)))
