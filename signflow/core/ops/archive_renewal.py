"""Long-term archive: fresh document timestamps before the old ones stop verifying.

A PAdES B-LTA file verifies offline for as long as its newest document
timestamp does, that is until the earliest expiry in that timestamp's TSA
certificate chain (its "horizon"). Before then a new document timestamp,
made with a TSA certificate that lives longer, is added on top, with the
validation data of the previous one embedded (PAdES "archive timestamp
chain"). The criterion is that horizon, not the document's age: a TSA
certificate's expiry is what breaks verification, while hash and key sizes
age over decades and would be handled by the same renewal with a new TSA.

The old signed bytes stay in the blob store: they remain valid evidence and
their hash is in the audit log; the request points at the newest bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import ConfigurationError, InvalidInput
from signflow.core.i18n import N_
from signflow.core.pades import timestamps
from signflow.core.pki import crl as revocation
from signflow.core.requests import workflow
from signflow.core.requests.deps import Deps
from signflow.models import AuditAction, RequestState, SignatureRequest

log = logging.getLogger(__name__)

AUDIT_ACTION = AuditAction.DOCUMENT_ARCHIVE_TIMESTAMPED
# Requests whose signed file is final: mid-route files are still being signed,
# and the next physician's activation is bound to their exact bytes.
FINAL_STATES = (RequestState.SIGNED, RequestState.DELIVERED, RequestState.RECEIVED)


@dataclass(frozen=True)
class DueDocument:
    request_id: int
    signed_sha256: str
    horizon: datetime


def _check_window(within_days: int) -> timedelta:
    if within_days < 0:
        raise InvalidInput(N_("the renewal window must be zero or more days"))
    return timedelta(days=within_days)


def _final_requests(session: Session, *, lock: bool) -> list[SignatureRequest]:
    query = (
        select(SignatureRequest)
        .where(
            SignatureRequest.signed_sha256.is_not(None),
            SignatureRequest.purged_at.is_(None),
            SignatureRequest.state.in_(FINAL_STATES),
        )
        .order_by(SignatureRequest.id)
    )
    if lock:
        # Several workers may run the renewal: each document is renewed once.
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def due_documents(
    session: Session, deps: Deps, *, now: datetime, within_days: int
) -> list[DueDocument]:
    """Signed documents whose newest document timestamp's horizon falls within
    `within_days` of `now` (read only: what `renew_due` would renew)."""
    window = _check_window(within_days)
    due: list[DueDocument] = []
    for req in _final_requests(session, lock=False):
        found = _due(session, deps, req, now=now, window=window)
        if found is not None:
            due.append(found)
    return due


def _due(
    session: Session, deps: Deps, req: SignatureRequest, *, now: datetime, window: timedelta
) -> DueDocument | None:
    sha = req.signed_sha256
    if sha is None:
        return None
    horizon = timestamps.timestamp_horizon(deps.blobs.get(session, sha))
    # No document timestamp: a B-T/B-LT file the site chose; it has no chain to extend.
    if horizon is None or horizon > now + window:
        return None
    return DueDocument(request_id=req.id, signed_sha256=sha, horizon=horizon)


def renew_due(
    session: Session, deps: Deps, *, now: datetime, within_days: int, actor: Actor
) -> list[int]:
    """Add an archive timestamp to every due document; return their request ids.

    Each renewed file is stored as a new blob, the request points at it, and
    an audit entry records both hashes. A document whose renewal would not push
    its horizon further (the TSA's own certificate expires no later) is left
    alone and logged. Only flushes; running it again right away renews nothing."""
    window = _check_window(within_days)
    tsa_horizon = timestamps.timestamper_horizon(deps.timestamper)
    if tsa_horizon is not None and tsa_horizon <= now + window:
        raise ConfigurationError(
            N_("the TSA certificate itself expires within %(within_days)s days "
               "(%(tsa_horizon)s): renew it (`signflow pki renew-tsa`) before adding "
               "archive timestamps"),
                   params={'within_days': within_days, 'tsa_horizon': format(tsa_horizon, '%Y-%m-%d')}
        )
    crls = [revocation.crl(session, deps.keys, issuer=issuer, now=now) for issuer in ("root", "issuing")]
    renewed: list[int] = []
    for req in _final_requests(session, lock=True):
        found = _due(session, deps, req, now=now, window=window)
        if found is None:
            continue
        before = deps.blobs.get(session, found.signed_sha256)
        after = timestamps.add_archive_timestamp(
            before, keys=deps.keys, timestamper=deps.timestamper, crls=crls
        )
        new_horizon = timestamps.timestamp_horizon(after)
        if new_horizon is None or new_horizon <= found.horizon:
            log.warning(
                "request %s: an archive timestamp from this TSA would not outlive the "
                "current one (%s); not renewed",
                req.id,
                found.horizon.date().isoformat(),
            )
            continue
        after_sha = deps.blobs.put(session, after, now=now)
        req.signed_sha256 = after_sha
        workflow.record(session, req, actor=actor, now=now, action=AUDIT_ACTION,
                        sha256_before=found.signed_sha256, sha256_after=after_sha,
                        horizon_before=audit.rfc3339(found.horizon),
                        horizon_after=audit.rfc3339(new_horizon))
        renewed.append(req.id)
    return renewed
