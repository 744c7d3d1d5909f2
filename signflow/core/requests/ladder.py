"""Where a pending request stands on its escalation ladder, for the technician's
live view: the rung, who is being paged, when it moves up (and the repeat page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from signflow.core.requests import access as access
from signflow.core.requests import oncall as oncall
from signflow.core.requests import policy as policy
from signflow.core.requests.deps import Deps
from signflow.models import RequestState, User

RUNG_NAMES = ("primary on call", "backup", "head of department")


@dataclass(frozen=True)
class LadderStatus:
    request_id: int
    state: RequestState
    rung: int  # 0-based
    rungs: int
    rung_name: str
    paged: tuple[str, ...]
    escalates_at: datetime | None
    seconds_left: int | None
    repeat_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.request_id, "state": str(self.state), "rung": self.rung + 1,
            "rungs": self.rungs, "rung_name": self.rung_name, "paged": list(self.paged),
            "escalates_at": self.escalates_at.isoformat() if self.escalates_at else None,
            "seconds_left": self.seconds_left,
            "repeat_at": self.repeat_at.isoformat() if self.repeat_at else None,
        }


def rung_name(rung: int) -> str:
    return RUNG_NAMES[min(rung, len(RUNG_NAMES) - 1)]


def status(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime) -> LadderStatus:
    """The ladder of a request `user` may see (NotFound otherwise, as every request view)."""
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    pending = req.state == RequestState.PENDING
    rung = req.escalation_level
    paged: tuple[str, ...] = ()
    repeat_at = None
    if pending:
        people = oncall.recipients_for_level(session, req.group, rung, now)
        paged = tuple(p.display_name for p in people)
        ladder = policy.policy_for(session, deps, req.group_id, req.urgency)
        if ladder.repeat_after_minutes is not None and ladder.repeat_after_minutes < ladder.minutes_at(rung):
            repeat_at = (req.deadline_at - timedelta(minutes=ladder.minutes_at(rung))
                         + timedelta(minutes=ladder.repeat_after_minutes))
            repeat_at = repeat_at if repeat_at > now else None
    return LadderStatus(
        request_id=req.id, state=req.state, rung=rung, rungs=deps.escalation_levels,
        rung_name=rung_name(rung), paged=paged,
        escalates_at=req.deadline_at if pending else None,
        seconds_left=max(0, int((req.deadline_at - now).total_seconds())) if pending else None,
        repeat_at=repeat_at)
