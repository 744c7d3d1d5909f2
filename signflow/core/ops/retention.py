"""Retention: document contents go once a closed request is old enough; the
request, its hashes and its audit trail stay for good."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from signflow.core.audit.log import Actor
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.core.ops.consistency import content_hashes
from signflow.core.pdf.preview import PreviewCache
from signflow.core.requests import workflow
from signflow.core.requests.deps import Deps
from signflow.models import AuditAction, RequestState, Signature, SignatureRequest

TERMINAL_STATES = (
    RequestState.RECEIVED,
    RequestState.DECLINED,
    RequestState.CANCELLED,
    RequestState.EXPIRED,
    RequestState.FAILED,
)


def purge(
    session: Session,
    deps: Deps,
    *,
    now: datetime,
    retention_days: int,
    actor: Actor,
    dry_run: bool = False,
    previews: PreviewCache | None = None,
) -> list[int]:
    """Remove the stored content of closed requests last changed more than
    `retention_days` ago; return their ids. A blob another request still
    needs stays. One `document.purged` audit entry per request; the caller
    commits (file blobs and cached previews go only once it does)."""
    if retention_days < 1:
        raise InvalidInput(N_("The retention period must be at least one day."))
    cutoff = now - timedelta(days=retention_days)
    due = session.scalars(
        select(SignatureRequest)
        .where(
            SignatureRequest.state.in_(TERMINAL_STATES),
            SignatureRequest.updated_at < cutoff,
            SignatureRequest.purged_at.is_(None),
        )
        .order_by(SignatureRequest.id)
        .with_for_update(skip_locked=True)
    ).all()
    if dry_run or not due:
        return [r.id for r in due]
    signatures: dict[int, list[Signature]] = defaultdict(list)
    for sig in session.scalars(select(Signature)):
        signatures[sig.request_id].append(sig)
    due_ids = {r.id for r in due}
    # Identical uploads share one blob: content still needed elsewhere stays.
    still_needed: set[str] = set()
    for other in session.scalars(
        select(SignatureRequest).where(SignatureRequest.purged_at.is_(None))
    ):
        if other.id not in due_ids:
            still_needed |= content_hashes(other, signatures[other.id])
    deleted: set[str] = set()
    for req in due:
        hashes = sorted(content_hashes(req, signatures[req.id]))
        removed = [h for h in hashes if h not in still_needed]
        for sha in removed:
            if sha not in deleted:
                deps.blobs.delete(session, sha)
                deleted.add(sha)
        req.purged_at = now
        workflow.record(session, req, actor=actor, now=now, action=AuditAction.DOCUMENT_PURGED,
                        removed_sha256=removed, kept_sha256=[h for h in hashes if h in still_needed],
                        retention_days=retention_days)
    if previews is not None:
        _purge_previews_after_commit(session, previews, sorted(deleted))
    return [r.id for r in due]


def _purge_previews_after_commit(
    session: Session, previews: PreviewCache, hashes: list[str]
) -> None:
    def _after_commit(_session: Session) -> None:
        for sha in hashes:
            previews.purge(sha)

    event.listen(session, "after_commit", _after_commit, once=True)
