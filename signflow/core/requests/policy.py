"""The escalation policy: per on-call group and urgency, the minutes a request waits
at each rung and an optional repeat page at the same rung. Without a policy row the
settings' `deadline_minutes` (SIGNFLOW_* / signflow.toml) apply to every rung."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.requests import oncall as oncall
from signflow.core.requests.deps import Deps
from signflow.models import AuditAction, EscalationPolicy, OnCallGroup, Urgency

MAX_RUNG_MINUTES = 24 * 60


@dataclass(frozen=True)
class Policy:
    """One group's ladder for one urgency: `rung_minutes[i]` minutes at rung i."""

    group_id: int
    urgency: Urgency
    rung_minutes: tuple[int, ...]
    repeat_after_minutes: int | None
    custom: bool

    def minutes_at(self, rung: int) -> int:
        return self.rung_minutes[min(rung, len(self.rung_minutes) - 1)]


def default_policy(deps: Deps, group_id: int, urgency: Urgency) -> Policy:
    minutes = deps.deadline_minutes[urgency]
    return Policy(group_id=group_id, urgency=urgency, rung_minutes=(minutes,) * deps.escalation_levels,
                  repeat_after_minutes=None, custom=False)


def policy_for(session: Session, deps: Deps, group_id: int, urgency: str) -> Policy:
    level = Urgency(urgency)
    row = session.scalar(select(EscalationPolicy).where(
        EscalationPolicy.group_id == group_id, EscalationPolicy.urgency == level))
    if row is None:
        return default_policy(deps, group_id, level)
    minutes = tuple(int(m) for m in row.rung_minutes.split(",") if m)
    default = default_policy(deps, group_id, level)
    # The ladder's length is the settings' (escalation_levels): pad or cut a stored policy.
    minutes = (minutes + default.rung_minutes)[: deps.escalation_levels] if minutes else default.rung_minutes
    return Policy(group_id=group_id, urgency=level, rung_minutes=minutes,
                  repeat_after_minutes=row.repeat_after_minutes, custom=True)


def policies(session: Session, deps: Deps) -> list[Policy]:
    """Every group's policy for every urgency (the admin page)."""
    groups = session.scalars(select(OnCallGroup.id).order_by(OnCallGroup.name))
    return [policy_for(session, deps, g, u) for g in groups for u in Urgency]


def rung_deadline(session: Session, deps: Deps, *, group_id: int, urgency: str, rung: int,
                  now: datetime) -> datetime:
    """When a request that reaches `rung` now escalates to the next one."""
    return now + timedelta(minutes=policy_for(session, deps, group_id, urgency).minutes_at(rung))


@dataclass(frozen=True)
class Start:
    """Where a new request enters its group's ladder."""

    rung: int
    deadline_at: datetime
    nobody_on_call: bool  # straight to the head of department (and the administrators told)


def start(session: Session, deps: Deps, *, group_id: int, urgency: str, now: datetime) -> Start:
    """The first rung, or the head of department's (the last one when the ladder is
    shorter) when nobody is on call for the group now; and when it moves up."""
    nobody = not oncall.on_call(session, group_id, now)
    rung = min(oncall.HEAD, deps.escalation_levels - 1) if nobody else oncall.PRIMARY
    return Start(rung=rung, deadline_at=rung_deadline(session, deps, group_id=group_id, urgency=urgency,
                                                      rung=rung, now=now), nobody_on_call=nobody)


def set_policy(session: Session, deps: Deps, *, actor: Actor, group_id: int, urgency: str,
               rung_minutes: list[int], repeat_after_minutes: int | None,
               now: datetime) -> Policy:
    """Store one group's ladder for one urgency (audited); requests already waiting
    keep their current deadline and follow the new one from their next rung."""
    if session.get(OnCallGroup, group_id) is None:
        raise InvalidInput(N_("Choose a group."))
    if urgency not in {u.value for u in Urgency}:
        raise InvalidInput(N_("Choose an urgency."))
    if len(rung_minutes) != deps.escalation_levels:
        raise InvalidInput(N_("Give the minutes of each of the %(escalation_levels)s rungs."),
                           params={'escalation_levels': deps.escalation_levels})
    if any(not 1 <= m <= MAX_RUNG_MINUTES for m in rung_minutes):
        raise InvalidInput(N_("Each rung lasts 1 to %(max_rung_minutes)s minutes."),
                           params={'max_rung_minutes': MAX_RUNG_MINUTES})
    if repeat_after_minutes is not None and not 1 <= repeat_after_minutes < max(rung_minutes):
        raise InvalidInput(N_("The repeat page comes after at least a minute, before the rung ends."))
    row = session.scalar(select(EscalationPolicy).where(
        EscalationPolicy.group_id == group_id, EscalationPolicy.urgency == Urgency(urgency))
        .with_for_update())
    if row is None:
        row = EscalationPolicy(group_id=group_id, urgency=Urgency(urgency))
        session.add(row)
    row.rung_minutes = ",".join(str(m) for m in rung_minutes)
    row.repeat_after_minutes = repeat_after_minutes
    row.updated_at = now
    session.flush()
    audit.append(session, now=now, actor=actor, action=AuditAction.ROTA_POLICY_SET, request_id=None,
                 group=group_id, urgency=urgency, rung_minutes=list(rung_minutes),
                 repeat_after_minutes=repeat_after_minutes)
    return policy_for(session, deps, group_id, urgency)
