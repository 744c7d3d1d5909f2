"""Evidence reports (assembled here, laid out by signflow.core.evidence.pdf) and
the auditor's workspace queries.

An evidence report is a PDF, sealed by the service (PAdES B-LTA, see
core.seal), that lists everything the audit log holds about one request:
every entry with its leaf hash and its RFC 9162 inclusion proof against a
tree head signed for the report over the whole committed log (stored as a
checkpoint when the report is done), its signed note and the audit verifier
key. A reader can therefore check offline, with
signflow.auditverify and nothing else, that these entries are exactly the
ones the service committed to, and with any PDF validator that the report
itself is what the service issued.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.auditverify import parse_canonical_line, verifier_key
from signflow.core.accounts.users import acting_user
from signflow.core.audit import checkpoints
from signflow.core.audit import export as audit_export
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Forbidden
from signflow.core.evidence.pdf import ProvenEntry, ReportPdf, both_times
from signflow.core.i18n import N_, STATE_LABELS, URGENCY_LABELS, Translator, from_stored, label
from signflow.core.pades import sign as signing
from signflow.core.pki.seal import SEAL_NAME, Seal
from signflow.core.requests import access
from signflow.core.requests import signing as request_signing
from signflow.core.requests.deps import Deps
from signflow.models import (
    AuditAction,
    AuditEntry,
    Destination,
    OnCallGroup,
    Role,
    Signature,
    SignatureRequest,
    User,
)

REPORT_READERS = frozenset({Role.TECHNICIAN, Role.RECIPIENT, Role.AUDITOR})
REPORT_ACTION = AuditAction.EVIDENCE_GENERATED
REPORT_CRL_MAX_AGE = timedelta(days=6)


@dataclass(frozen=True)
class Timeline:
    request: SignatureRequest
    entries: tuple[tuple[AuditEntry, dict[str, Any]], ...]


@dataclass(frozen=True)
class UserChoice:
    id: int
    username: str
    role: str


def user_choices(session: Session) -> list[UserChoice]:
    rows = session.execute(select(User.id, User.username, User.role).order_by(User.username))
    return [UserChoice(id=uid, username=name, role=role) for uid, name, role in rows]


def request_timeline(
    session: Session, *, user: User, request_id: int, now: datetime
) -> Timeline:
    """Every entry of one request, oldest first (auditors only)."""
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    if user.role != Role.AUDITOR:
        raise Forbidden(N_("Only auditors see a request's audit timeline."))
    entries = session.scalars(
        select(AuditEntry).where(AuditEntry.request_id == req.id).order_by(AuditEntry.seq)
    )
    return Timeline(
        request=req,
        entries=tuple((e, parse_canonical_line(e.line.encode())) for e in entries),
    )


def evidence_report(
    session: Session,
    deps: Deps,
    seal: Seal,
    *,
    actor: Actor,
    request_id: int,
    now: datetime,
    origin: str,
) -> bytes:
    """The sealed evidence PDF of one request, for its technician, its recipient
    (once delivered) or an auditor. Proves every entry against a tree head signed
    for the report over the whole log, stores that head as a checkpoint and appends
    `evidence.generated` (with the report's SHA-256) when the report is sealed.
    Nothing is locked until then (see signflow.db for SQLite). Only flushes."""
    user = acting_user(session, actor)
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    if user.role not in REPORT_READERS:
        raise Forbidden(N_("Your role does not give access to evidence reports."))
    # Everything slow (the tree, the layout, the seal) runs before anything is locked:
    # the head lock (SQLite: the write lock) is taken at the end, by store_head.
    head, proofs = audit_export.prove_request(
        session, req.id, signing_key=deps.keys.audit_key, origin=origin
    )
    proven = [
        ProvenEntry(entry=entry, data=parse_canonical_line(entry.line.encode()), proof=tuple(proof))
        for entry, proof in proofs
    ]
    vkey = verifier_key(origin, deps.keys.audit_key.public_key())
    t = Translator(deps.language, deps.timezone)
    layout = ReportPdf(deps.timezone, req.id, now, t)
    stamp_page, stamp_box = layout.build(
        facts=_facts(session, req, deps.timezone, t),
        signatures=_signature_lines(session, req, deps.timezone, t),
        proven=proven,
        display_names=_display_names(session, (p.entry.actor_id for p in proven)),
        checkpoint=head,
        origin=origin,
        vkey=vkey,
        reader=user,
    )
    layout.attach(
        json.dumps(
            {
                "request": req.id,
                "origin": origin,
                "verifier_key": vkey,
                "checkpoint": {"size": head.size, "root": head.root.hex(), "note": head.note},
                "entries": [
                    {
                        "seq": p.entry.seq,
                        "line": p.entry.line,
                        "leaf": bytes(p.entry.leaf_hash).hex(),
                        "proof": [h.hex() for h in p.proof],
                    }
                    for p in proven
                ],
            },
            ensure_ascii=False,
            indent=1,
        ).encode(),
        now,
    )
    sealed = signing.sign_pdf(
        layout.output_bytes(),
        key=seal.key,
        certificate=seal.certificate,
        keys=deps.keys,
        stamp=signing.Stamp(
            signer_name=SEAL_NAME,
            professional_id=None,
            reason=N_("Evidence report"),
            language=deps.language,
            when=now,
            timezone=deps.timezone,
            page=stamp_page,
            box=stamp_box,
        ),
        timestamper=deps.timestamper,
        level="B-LTA",
        # Any still valid CRL listing today's revocations: issuing one here would take
        # the write lock (SQLite) before the seal rather than after it.
        crls=request_signing.current_crls(session, deps, now=now, max_age=REPORT_CRL_MAX_AGE),
    )
    # Stored unless a larger checkpoint was meanwhile: the report's signed head is a
    # prefix of that one's tree either way.
    checkpoints.store_head(session, head, now=now)
    audit.append(
        session,
        now=now,
        actor=actor,
        action=REPORT_ACTION,
        request_id=req.id,
        sha256=hashlib.sha256(sealed).hexdigest(),
        checkpoint=head.size,
    )
    return sealed


def _display_names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.display_name).where(User.id.in_(wanted)))
    return {uid: name for uid, name in rows}


def _user_label(user: User | None) -> str:
    return f"{user.display_name} ({user.username})" if user else "—"


def _facts(session: Session, req: SignatureRequest, tz: str, t: Translator) -> list[tuple[str, str, bool]]:
    """(label, value, is_hash) rows of the request section."""
    group_ids = access.route_of(req)
    names = {
        gid: name
        for gid, name in session.execute(
            select(OnCallGroup.id, OnCallGroup.name).where(OnCallGroup.id.in_(group_ids))
        )
    }
    destination = session.get(Destination, req.destination_id)
    rows: list[tuple[str, str, bool]] = [
        (t(N_("Request")), f"#{req.id}", False),
        (t(N_("Title")), req.title, False),
        (t(N_("File")), req.filename, False),
        (t(N_("On-call groups")), t(N_(", then ")).join(names.get(g, f"#{g}") for g in group_ids), False),
        (t(N_("Destination")), destination.name if destination else f"#{req.destination_id}", False),
        (t(N_("Urgency")), t(label(URGENCY_LABELS, req.urgency)), False),
        (t(N_("State")), t(label(STATE_LABELS, req.state)), False),
        (t(N_("Technician")), _user_label(req.technician), False),
        (t(N_("Created")), both_times(req.created_at, tz, t), False),
        (t(N_("Deadline")), both_times(req.deadline_at, tz, t), False),
        (t(N_("Pages")), str(req.page_count), False),
    ]
    if req.signed_by is not None:
        rows.append((t(N_("Signed by")), _user_label(req.signed_by), False))
        rows.append((t(N_("Signed at")), both_times(req.signed_at, tz, t), False))
    if req.declined_by is not None:
        rows.append((t(N_("Declined by")), _user_label(req.declined_by), False))
        rows.append((t(N_("Reason")), req.decline_reason or "", False))
    if req.acknowledged_by is not None:
        rows.append((t(N_("Received by")), _user_label(req.acknowledged_by), False))
        rows.append((t(N_("Received at")), both_times(req.acknowledged_at, tz, t), False))
    if req.failure_reason:
        failure = from_stored(req.failure_reason)
        rows.append((t(N_("Failure")), failure.in_language(t.language) if failure else "", False))
    removed = access.removed_content(req)
    if removed:
        rows.append((t(N_("Removed at upload")), ", ".join(removed), False))
    rows.append((t(N_("SHA-256 original")), req.original_sha256, True))
    rows.append((t(N_("SHA-256 normalised")), req.document_sha256, True))
    rows.append((t(N_("SHA-256 signed")), req.signed_sha256 or t(N_("— (not signed)")),
                 bool(req.signed_sha256)))
    return rows


def _signature_lines(
    session: Session, req: SignatureRequest, tz: str, t: Translator
) -> list[list[tuple[str, str, bool]]]:
    rows = session.execute(
        select(Signature, User)
        .join(User, User.id == Signature.user_id)
        .where(Signature.request_id == req.id)
        .order_by(Signature.signed_at, Signature.id)
    )
    return [
        [
            (t(N_("Signer")), _user_label(signer), False),
            (t(N_("Certificate")), sig.certificate_serial, True),
            (t(N_("Signed at")), both_times(sig.signed_at, tz, t), False),
            (t(N_("SHA-256 before")), sig.sha256_before, True),
            (t(N_("SHA-256 after")), sig.sha256_after, True),
        ]
        for sig, signer in rows
    ]
