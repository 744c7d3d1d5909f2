"""Who is on call for a group at an instant, and the escalation ladder.

Ladder: level 0 = the primary on call, level 1 = the backup, last level = the
group's head of department. A request escalates one rung per missed deadline.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.models import OnCallGroup, Role, RotaShift, User

PRIMARY, BACKUP, HEAD = 0, 1, 2
LADDER_LEVELS = 3


def on_call(session: Session, group_id: int, at: datetime, *, level: int | None = None) -> list[User]:
    """Active physicians with a shift covering `at` (at one rung, or any rung)."""
    query = (
        select(User)
        .join(RotaShift, RotaShift.user_id == User.id)
        .where(
            RotaShift.group_id == group_id,
            RotaShift.starts_at <= at,
            RotaShift.ends_at > at,
            User.active.is_(True),
            User.role == Role.PHYSICIAN,
        )
        .order_by(RotaShift.level, User.id)
    )
    if level is not None:
        query = query.where(RotaShift.level == level)
    return list(dict.fromkeys(session.scalars(query)))


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
    shifts = select(RotaShift.group_id).where(
        RotaShift.user_id == user.id, RotaShift.starts_at <= at, RotaShift.ends_at > at
    )
    heads = select(OnCallGroup.id).where(OnCallGroup.head_user_id == user.id)
    return sorted(set(session.scalars(shifts)) | set(session.scalars(heads)))
