"""Where a pending request stands on its escalation ladder, for the technician's
live view: the rung, who is being paged (everyone on call at that rung now, from the
rota, covers included) with where their page is, when it moves up (and the repeat page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from signflow.core.requests import access as access
from signflow.core.requests import oncall as oncall
from signflow.core.requests import paging as paging
from signflow.core.requests import policy as policy
from signflow.core.requests.deps import Deps
from signflow.models import DeliveryStatus, NotificationDelivery, RequestState, User

RUNG_NAMES = ("primary on call", "backup", "head of department")


class PageState(StrEnum):
    QUEUED = "queued"  # not sent yet (the worker's next tick, or a retry)
    SENT = "sent"
    FAILED = "failed"  # every channel tried failed (or none is verified)
    SEEN = "seen"  # they opened the request


@dataclass(frozen=True)
class Paged:
    name: str
    state: PageState


def page_state(rows: list[NotificationDelivery]) -> PageState:
    """One person's page at this rung, from its deliveries (none yet: queued)."""
    if any(r.seen_at is not None for r in rows):
        return PageState.SEEN
    if any(r.status == DeliveryStatus.SENT for r in rows):
        return PageState.SENT
    if rows and all(r.next_attempt_at is None for r in rows):
        return PageState.FAILED
    return PageState.QUEUED


@dataclass(frozen=True)
class LadderStatus:
    request_id: int
    state: RequestState
    rung: int  # 0-based
    rungs: int
    rung_name: str
    paged: tuple[Paged, ...]
    escalates_at: datetime | None
    seconds_left: int | None
    repeat_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.request_id, "state": str(self.state), "rung": self.rung + 1,
            "rungs": self.rungs, "rung_name": self.rung_name,
            "paged": [{"name": p.name, "state": str(p.state)} for p in self.paged],
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
    paged: tuple[Paged, ...] = ()
    repeat_at = None
    if pending:
        ladder = policy.policy_for(session, deps, req.group_id, req.urgency)
        started = req.deadline_at - timedelta(minutes=ladder.minutes_at(rung))
        # This rung's pages: the ladder's own, repeat pages and handovers sent since it began.
        rows = [r for r in paging.deliveries_of(session, req.id) if r.user_id is not None
                and (r.level == rung or (r.level is None and r.created_at >= started))]
        paged = tuple(Paged(p.display_name, page_state([r for r in rows if r.user_id == p.id]))
                      for p in oncall.recipients_for_level(session, req.group, rung, now))
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
