"""Cross-checks between requests, signatures, blobs and the audit log, and the
recovery the worker runs for requests that can no longer progress.

The workflow writes a state change and its audit entry in one transaction, so
after any crash the two must still agree; `check` proves it on a live
database (or a restored one) and `recover` turns a request whose content is
gone into a visible FAILED state instead of leaving it pending forever.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.audit.log import SYSTEM
from signflow.core.errors import SignflowError
from signflow.core.i18n import N_, Msg, stored
from signflow.core.requests import workflow
from signflow.core.requests.deps import Deps
from signflow.core.storage import BlobStore
from signflow.models import (
    AuditAction,
    AuditEntry,
    Job,
    JobKind,
    JobStatus,
    NotifyEvent,
    RequestState,
    Signature,
    SignatureRequest,
)

# The state each transition leaves a request in; the latest such audit entry
# of a request must name its current state.
TRANSITIONS: dict[AuditAction, RequestState] = {
    AuditAction.REQUEST_CREATED: RequestState.PENDING,
    AuditAction.REQUEST_ESCALATED: RequestState.PENDING,
    AuditAction.REQUEST_SIGNING_FAILED: RequestState.PENDING,
    AuditAction.REQUEST_DELIVERED: RequestState.DELIVERED,
    AuditAction.REQUEST_RECEIVED: RequestState.RECEIVED,
    AuditAction.REQUEST_DECLINED: RequestState.DECLINED,
    AuditAction.REQUEST_CANCELLED: RequestState.CANCELLED,
    AuditAction.REQUEST_EXPIRED: RequestState.EXPIRED,
    AuditAction.REQUEST_FAILED: RequestState.FAILED,
}
SIGNED_STATES = frozenset({RequestState.SIGNED, RequestState.DELIVERED, RequestState.RECEIVED})
MISSING_DOCUMENT = N_(
    "The document could not be found in storage, so this request cannot be signed "
    "or delivered. Please upload it again."
)
MISSING_SIGNED = N_(
    "The signed document could not be found in storage, so it cannot be delivered. "
    "Please upload the document again for a new signature."
)


@dataclass(frozen=True)
class Problem:
    request_id: int | None
    kind: str
    detail: str

    def line(self) -> str:
        where = f"request {self.request_id}" if self.request_id is not None else "service"
        return f"{where}: {self.kind}: {self.detail}"


def _blob_problem(session: Session, blobs: BlobStore, sha256: str) -> str | None:
    try:
        blobs.get(session, sha256)
    except SignflowError as exc:
        return exc.message
    return None


def content_hashes(req: SignatureRequest, signatures: Iterable[Signature]) -> set[str]:
    """Every stored blob a request refers to (the original upload is a hash only)."""
    hashes = {req.document_sha256}
    if req.signed_sha256:
        hashes.add(req.signed_sha256)
    for sig in signatures:
        hashes.update((sig.sha256_before, sig.sha256_after))
    return hashes


def _state_problems(req: SignatureRequest) -> list[str]:
    found: list[str] = []
    signed = bool(req.signed_sha256 and req.signed_by_id and req.signed_at)
    if req.state in SIGNED_STATES and not signed:
        found.append(f"state {req.state} without signed file, signer and time")
    acknowledged = req.acknowledged_by_id is not None or req.acknowledged_at is not None
    if req.state == RequestState.RECEIVED and not (req.acknowledged_by_id and req.acknowledged_at):
        found.append("received without who and when")
    if req.state != RequestState.RECEIVED and acknowledged:
        found.append(f"state {req.state} but acknowledged")
    if req.state == RequestState.DECLINED and not req.declined_by_id:
        found.append("declined without who")
    if req.state == RequestState.PENDING and req.declined_by_id:
        found.append("pending but declined")
    if req.state == RequestState.FAILED and not req.failure_reason:
        found.append("failed without a reason for the technician")
    return found


def check(session: Session, blobs: BlobStore) -> list[Problem]:
    """Every disagreement between requests, signatures, blobs and the audit log."""
    problems: list[Problem] = []
    signatures: dict[int, list[Signature]] = defaultdict(list)
    for sig in session.scalars(select(Signature).order_by(Signature.id)):
        signatures[sig.request_id].append(sig)
    signed_entries: dict[int, list[str]] = defaultdict(list)
    last_transition: dict[int, tuple[int, RequestState]] = {}
    rows = session.execute(
        select(AuditEntry.seq, AuditEntry.action, AuditEntry.request_id, AuditEntry.line)
        .where(AuditEntry.request_id.is_not(None),
               AuditEntry.action.in_([*TRANSITIONS, AuditAction.REQUEST_SIGNED]))
        .order_by(AuditEntry.seq)
    )
    for seq, action, request_id, line in rows:
        assert request_id is not None
        if action == AuditAction.REQUEST_SIGNED:
            fields = json.loads(line)
            signed_entries[request_id].append(str(fields.get("sha256_after")))
            # A signature that hands over to the next group leaves the request pending.
            if fields.get("next_group") is not None:
                last_transition[request_id] = (seq, RequestState.PENDING)
        elif action in TRANSITIONS:
            last_transition[request_id] = (seq, TRANSITIONS[action])

    requests = {
        r.id: r for r in session.scalars(select(SignatureRequest).order_by(SignatureRequest.id))
    }
    for rid, req in requests.items():
        problems += [Problem(rid, "state", d) for d in _state_problems(req)]
        transition = last_transition.get(rid)
        if transition is None:
            problems.append(Problem(rid, "audit", "no request.created entry"))
        elif transition[1] != req.state and not (
            # SIGNED is only ever seen inside the transaction that delivers.
            req.state == RequestState.SIGNED and transition[1] == RequestState.DELIVERED
        ):
            problems.append(
                Problem(
                    rid,
                    "audit",
                    f"state is {req.state} but the audit log says {transition[1]} "
                    f"(entry {transition[0]})",
                )
            )
        sig_after = sorted(s.sha256_after for s in signatures.get(rid, []))
        logged_after = sorted(signed_entries.get(rid, []))
        if sig_after != logged_after:
            problems.append(
                Problem(
                    rid,
                    "signature",
                    f"{len(sig_after)} signature row(s) but {len(logged_after)} "
                    "request.signed entrie(s), or their hashes differ",
                )
            )
        if req.signed_sha256 and req.signed_sha256 not in sig_after:
            problems.append(Problem(rid, "signature", "signed file has no signature row"))
        if req.purged_at is not None:
            continue
        for sha in sorted(content_hashes(req, signatures.get(rid, []))):
            if (why := _blob_problem(session, blobs, sha)) is not None:
                problems.append(Problem(rid, "blob", f"{sha[:16]}…: {why}"))
    for rid in sorted(set(signatures) - set(requests)):
        problems.append(Problem(rid, "signature", "signature row of a missing request"))
    pending = select(Job).where(Job.status == JobStatus.PENDING, Job.kind == JobKind.NOTIFY)
    for job in session.scalars(pending):
        target = json.loads(job.payload).get("request")
        if target is not None and int(target) not in requests:
            problems.append(
                Problem(int(target), "job", f"job {job.id} notifies about a missing request")
            )
    return problems


def recover(session: Session, deps: Deps, *, now: datetime, limit: int = 200) -> list[int]:
    """Mark FAILED (with a reason the technician sees, and an audit entry) every
    request that waits on content that is gone. Rows are claimed with SKIP
    LOCKED, so several workers can run it; the caller commits."""
    stuck = session.scalars(
        select(SignatureRequest)
        .where(
            SignatureRequest.state.in_(
                [RequestState.PENDING, RequestState.SIGNED, RequestState.DELIVERED]
            ),
            SignatureRequest.purged_at.is_(None),
        )
        .order_by(SignatureRequest.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    blobs = deps.blobs
    failed: list[int] = []
    for req in stuck:
        # `exists` is cheap (no decryption): this runs at every worker tick.
        if req.state == RequestState.PENDING:
            missing = None if blobs.exists(session, req.document_sha256) else req.document_sha256
            reason = MISSING_DOCUMENT
        else:
            sha = req.signed_sha256 or ""
            missing = None if sha and blobs.exists(session, sha) else (sha or "none")
            reason = MISSING_SIGNED
        if missing is None:
            continue
        previous = req.state
        req.state, req.failure_reason = RequestState.FAILED, stored(Msg(reason))
        workflow.record(session, req, actor=SYSTEM, now=now, action=AuditAction.REQUEST_FAILED,
                        notify=NotifyEvent.FAILED, previous_state=previous,
                        missing_sha256=missing, reason=reason)
        failed.append(req.id)
    return failed
