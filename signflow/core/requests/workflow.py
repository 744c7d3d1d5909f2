"""The request state machine. Every transition flushes its state change and its
audit entry together; the caller commits once.

PENDING --sign--> SIGNED --(auto)--> DELIVERED --acknowledge--> RECEIVED
   |  --decline--> DECLINED
   |  --cancel--> CANCELLED
   --deadline--> escalation level + 1, EXPIRED after the last level
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pikepdf
from cryptography import x509
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from signflow.core.accounts.users import actor_of
from signflow.core.audit import log as audit
from signflow.core.audit.log import SYSTEM
from signflow.core.errors import Conflict, CredentialBlocked, Forbidden, InvalidInput, NotFound, WrongPin
from signflow.core.pades import sign as signing
from signflow.core.pades import validate as validation
from signflow.core.pdf.normalise import NormalisedPdf
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.pki import keystore as pki
from signflow.core.requests import activation as activation
from signflow.core.requests import oncall as oncall
from signflow.core.requests import outbox as outbox
from signflow.core.storage import BlobStore
from signflow.models import (
    Destination,
    OnCallGroup,
    RequestState,
    Role,
    Signature,
    SignatureRequest,
    Urgency,
    User,
)

MAX_NOTE = 2000
MAX_ROUTE = 4
MAX_REASON = 1000
SIGN_REASON = "Approved for transplant workflow"


@dataclass(frozen=True)
class Deps:
    """Adapters and settings the workflow needs, wired by the app factory."""

    keys: pki.KeyMaterial
    blobs: BlobStore
    timestamper: Any
    timezone: str
    pades_level: str
    activation_key: bytes
    deadline_minutes: Mapping[str, int]
    escalation_levels: int = oncall.LADDER_LEVELS


@dataclass(frozen=True)
class SigningForm:
    """What the sign page needs: the exact bytes' hash and the activation token."""

    request: SignatureRequest
    document_sha256: str
    activation_token: str
    credential_serial: str


@dataclass(frozen=True)
class Document:
    filename: str
    data: bytes
    sha256: str


def local_time(when: datetime, tz: str) -> str:
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


# -- reading -----------------------------------------------------------------


def may_view(session: Session, user: User, req: SignatureRequest, now: datetime) -> bool:
    """The one object-level access rule for requests."""
    if not user.active:
        return False
    match user.role:
        case Role.TECHNICIAN:
            return req.technician_id == user.id
        case Role.PHYSICIAN:
            return handled_by(session, req, user) or any(
                oncall.may_act_for_group(session, user, group, now)
                for group in _route_groups(session, req)
            )
        case Role.RECIPIENT:
            return req.destination_id == user.destination_id and req.state in (
                RequestState.DELIVERED, RequestState.RECEIVED
            )
        case Role.AUDITOR:
            return True
        case _:
            return False


def may_read_document(session: Session, user: User, req: SignatureRequest, now: datetime) -> bool:
    """Auditors see metadata and the audit trail, not medical content; admins see nothing."""
    return user.role in (Role.TECHNICIAN, Role.PHYSICIAN, Role.RECIPIENT) and may_view(
        session, user, req, now
    )


def get_request(session: Session, *, user: User, request_id: int, now: datetime,
                for_update: bool = False) -> SignatureRequest:
    query = select(SignatureRequest).where(SignatureRequest.id == request_id)
    if for_update:
        query = query.with_for_update()
    req = session.scalar(query)
    # Someone else's request looks exactly like a missing one.
    if req is None or not may_view(session, user, req, now):
        raise NotFound("No such request, or it is not yours to see.")
    return req


def list_requests(session: Session, *, user: User, now: datetime, limit: int = 200) -> list[SignatureRequest]:
    query = select(SignatureRequest).order_by(SignatureRequest.id.desc()).limit(limit)
    match user.role:
        case Role.TECHNICIAN:
            query = query.where(SignatureRequest.technician_id == user.id)
        case Role.PHYSICIAN:
            groups = oncall.groups_on_call(session, user, now)
            signed = select(Signature.request_id).where(Signature.user_id == user.id)
            query = query.where(
                or_(
                    SignatureRequest.group_id.in_(groups),
                    SignatureRequest.id.in_(signed),
                    SignatureRequest.declined_by_id == user.id,
                )
            )
        case Role.RECIPIENT:
            query = query.where(
                SignatureRequest.destination_id == user.destination_id,
                SignatureRequest.state.in_([RequestState.DELIVERED, RequestState.RECEIVED]),
            )
        case Role.AUDITOR:
            pass
        case _:
            return []
    return list(session.scalars(query))


def document_for(
    session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
    ip: str | None, download: bool = False,
) -> Document:
    """The bytes a user may read: the signed file once there is one, else the
    normalised upload (the exact bytes a physician previews and signs)."""
    req = get_request(session, user=user, request_id=request_id, now=now)
    if not may_read_document(session, user, req, now):
        raise Forbidden("Your role cannot read documents.")
    if req.purged_at is not None:
        raise NotFound("This document was removed after its retention period.")
    sha = req.signed_sha256 or req.document_sha256
    data = deps.blobs.get(session, sha)
    if download:
        audit.append(session, now=now, actor=actor_of(user, ip), action="document.downloaded",
                     request_id=req.id, sha256=sha)
    stem = req.filename.removesuffix(".pdf")
    return Document(filename=f"{stem}-signed.pdf" if req.signed_sha256 else req.filename,
                    data=data, sha256=sha)


# -- transitions -------------------------------------------------------------


def _deadline(deps: Deps, urgency: str, now: datetime) -> datetime:
    return now + timedelta(minutes=deps.deadline_minutes[urgency])


def create_request(
    session: Session, deps: Deps, *, user: User, ip: str | None, now: datetime,
    upload: NormalisedPdf, filename: str, title: str, group_id: int, destination_id: int,
    urgency: str, note: str = "", stamp_position: str | None = None,
    then_group_ids: Sequence[int] = (),
) -> SignatureRequest:
    """`then_group_ids`: groups that sign after `group_id`, in order."""
    if user.role != Role.TECHNICIAN:
        raise Forbidden("Only technicians send documents for signature.")
    if urgency not in {u.value for u in Urgency}:
        raise InvalidInput("Choose an urgency.")
    route = [group_id, *[g for g in then_group_ids if g]]
    if len(set(route)) != len(route) or len(route) > MAX_ROUTE:
        raise InvalidInput(f"Each group signs once, {MAX_ROUTE} groups at most.")
    if any(session.get(OnCallGroup, g) is None for g in route):
        raise InvalidInput("Choose an on-call group.")
    group = session.get(OnCallGroup, group_id)
    destination = session.get(Destination, destination_id)
    if group is None:
        raise InvalidInput("Choose an on-call group.")
    if destination is None:
        raise InvalidInput("Choose a destination service.")
    if len(note) > MAX_NOTE:
        raise InvalidInput(f"The note is limited to {MAX_NOTE} characters.")
    title = " ".join(title.split())[:200] or filename
    stored = deps.blobs.put(session, upload.data, now=now)
    req = SignatureRequest(
        technician_id=user.id, group_id=group.id, route=",".join(map(str, route)), step=0,
        destination_id=destination.id,
        title=title, urgency=urgency, note=note.strip(), state=RequestState.PENDING,
        escalation_level=0, deadline_at=_deadline(deps, urgency, now), filename=filename,
        original_sha256=upload.original_sha256, document_sha256=stored,
        page_count=upload.page_count, removed_content=json.dumps(list(upload.removed)),
        stamp_position=stamp_position, created_at=now, updated_at=now,
    )
    session.add(req)
    session.flush()
    audit.append(
        session, now=now, actor=actor_of(user, ip), action="request.created", request_id=req.id,
        group=group.id, route=route, destination=destination.id, urgency=urgency,
        original_sha256=upload.original_sha256, document_sha256=stored,
        removed=list(upload.removed), pages=upload.page_count,
    )
    outbox.enqueue(session, "notify", {"request": req.id, "event": "created", "level": 0}, now=now)
    return req


def state_message(req: SignatureRequest, tz: str) -> str:
    if req.state in (RequestState.SIGNED, RequestState.DELIVERED, RequestState.RECEIVED):
        who = req.signed_by.display_name if req.signed_by else "another physician"
        when = local_time(req.signed_at, tz) if req.signed_at else ""
        return f"Already signed by {who} at {when}."
    if req.state == RequestState.DECLINED:
        who = req.declined_by.display_name if req.declined_by else "a physician"
        return f"Already declined by {who}."
    return f"This request is {req.state}; it can no longer be signed."


def _require_pending(req: SignatureRequest, deps: Deps) -> None:
    if req.state != RequestState.PENDING:
        raise Conflict(state_message(req, deps.timezone))


def handled_by(session: Session, req: SignatureRequest, user: User) -> bool:
    if req.declined_by_id == user.id:
        return True
    return session.scalar(select(Signature.id).where(
        Signature.request_id == req.id, Signature.user_id == user.id).limit(1)) is not None


def _route_groups(session: Session, req: SignatureRequest) -> list[OnCallGroup]:
    groups = [session.get(OnCallGroup, g) for g in route_of(req)]
    return [g for g in groups if g is not None]


def _require_signer(session: Session, user: User, req: SignatureRequest, now: datetime,
                    deps: Deps) -> None:
    if user.role == Role.PHYSICIAN and req.state == RequestState.PENDING:
        if oncall.may_act_for_group(session, user, req.group, now):
            return
        done = _route_groups(session, req)[: req.step]
        if any(oncall.may_act_for_group(session, user, g, now) for g in done):
            # Someone of this physician's group signed this step first.
            raise Conflict(step_message(req, deps.timezone))
    if user.role == Role.PHYSICIAN and req.state != RequestState.PENDING:
        raise Conflict(state_message(req, deps.timezone))
    raise Forbidden("Only a physician on call for this group can act on this request.")


def step_message(req: SignatureRequest, tz: str) -> str:
    who = req.signed_by.display_name if req.signed_by else "another physician"
    when = local_time(req.signed_at, tz) if req.signed_at else ""
    return f"Already signed by {who} at {when}; it now awaits {req.group.name}."


def prepare_signing(session: Session, deps: Deps, *, user: User, request_id: int,
                    now: datetime) -> SigningForm:
    req = get_request(session, user=user, request_id=request_id, now=now)
    _require_signer(session, user, req, now, deps)
    credential = creds.active_credential(session, user.id)
    if credential is None:
        raise CredentialBlocked("You have no signing credential yet: set your signing PIN first.")
    creds.check_usable(credential, now=now)
    token = activation.issue(
        deps.activation_key, user_id=user.id, request_id=req.id, credential_id=credential.id,
        document_sha256=req.document_sha256, now=now,
    )
    return SigningForm(request=req, document_sha256=req.document_sha256,
                       activation_token=token, credential_serial=credential.serial)


def _parse_position(raw: str | None) -> tuple[int | None, tuple[float, float, float, float] | None]:
    if not raw:
        return None, None
    page, x1, y1, x2, y2 = raw.split(",")
    return int(page), (float(x1), float(y1), float(x2), float(y2))


def sign_request(
    session: Session, deps: Deps, *, user: User, request_id: int, pin: str,
    activation_token: str, shown_sha256: str, now: datetime, ip: str | None,
) -> SignatureRequest:
    actor = actor_of(user, ip)
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    _require_signer(session, user, req, now, deps)
    claims = activation.read(deps.activation_key, activation_token, now=now)
    if claims.user_id != user.id or claims.request_id != req.id:
        raise Forbidden("This signing form belongs to another request. Reload the document.")
    if not (shown_sha256 == claims.document_sha256 == req.document_sha256):
        raise Conflict("The document differs from the one you were shown. Reload it and sign again.")
    credential = creds.active_credential(session, user.id)
    if credential is None or credential.id != claims.credential_id:
        raise Forbidden("Your signing credential changed since you opened the document. Reload it.")
    try:
        key = creds.unlock(session, deps.keys, credential, pin, now=now)
    except (WrongPin, CredentialBlocked) as exc:
        audit.append(session, now=now, actor=actor, action="signature.pin_rejected",
                     request_id=req.id, credential=credential.serial, problem=exc.code)
        raise
    used = activation.consume(session, claims, now=now)
    certificate = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
    document = deps.blobs.get(session, req.document_sha256)
    page, box = _parse_position(req.stamp_position)
    stamp = signing.Stamp(
        signer_name=user.display_name, professional_id=user.professional_id,
        reason=SIGN_REASON, when=now, timezone=deps.timezone, page=page, box=box,
    )
    signed = signing.sign_pdf(
        document, key=key, certificate=certificate, keys=deps.keys, stamp=stamp,
        timestamper=deps.timestamper, level=deps.pades_level,
        crls=current_crls(session, deps, now=now),
    )
    signed_sha = deps.blobs.put(session, signed, now=now)
    session.add(Signature(
        request_id=req.id, user_id=user.id, credential_id=credential.id,
        certificate_serial=credential.serial, sha256_before=req.document_sha256,
        sha256_after=signed_sha, activation_id=used.id, signed_at=now,
    ))
    sha_before = req.document_sha256
    req.signed_sha256, req.signed_by_id, req.signed_at, req.updated_at = signed_sha, user.id, now, now
    route = route_of(req)
    audit_fields: dict[str, Any] = dict(
        certificate_serial=credential.serial, sha256_before=sha_before, sha256_after=signed_sha,
        activation=used.id, level=deps.pades_level, factors=["password", "signing-pin"],
        group=req.group_id, step=req.step,
    )
    # The proof the checkpoint covers this signature should not wait for the next tick.
    outbox.enqueue(session, "checkpoint", {"reason": "request.signed"}, now=now)
    if req.step + 1 < len(route):
        # The next group signs the signed bytes (an approval signature on top).
        req.step += 1
        req.group_id = route[req.step]
        req.document_sha256 = signed_sha
        req.assignee_id = None
        req.escalation_level = 0
        req.deadline_at = _deadline(deps, req.urgency, now)
        session.flush()
        audit.append(session, now=now, actor=actor, action="request.signed", request_id=req.id,
                     next_group=req.group_id, **audit_fields)
        outbox.enqueue(session, "notify", {"request": req.id, "event": "created", "level": 0},
                       now=now)
        return req
    req.state = RequestState.SIGNED
    session.flush()
    audit.append(session, now=now, actor=actor, action="request.signed", request_id=req.id,
                 **audit_fields)
    _deliver(session, req, now=now)
    return req


def route_of(req: SignatureRequest) -> list[int]:
    return [int(g) for g in req.route.split(",") if g] or [req.group_id]


def _deliver(session: Session, req: SignatureRequest, *, now: datetime) -> None:
    req.state = RequestState.DELIVERED
    req.updated_at = now
    session.flush()
    audit.append(session, now=now, actor=SYSTEM, action="request.delivered", request_id=req.id,
                 destination=req.destination_id, sha256=req.signed_sha256)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "delivered"}, now=now)


def decline_request(session: Session, deps: Deps, *, user: User, request_id: int, reason: str,
                    now: datetime, ip: str | None) -> SignatureRequest:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why you decline, for the technician.")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"The reason is limited to {MAX_REASON} characters.")
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    _require_signer(session, user, req, now, deps)
    req.state, req.declined_by_id, req.decline_reason, req.updated_at = (
        RequestState.DECLINED, user.id, reason, now)
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.declined",
                 request_id=req.id, reason=reason)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "declined"}, now=now)
    return req


def cancel_request(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
                   ip: str | None) -> SignatureRequest:
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    if user.role != Role.TECHNICIAN:
        raise Forbidden("Only the technician who sent a request can cancel it.")
    if req.state == RequestState.CANCELLED:
        return req
    _require_pending(req, deps)
    req.state, req.updated_at = RequestState.CANCELLED, now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.cancelled",
                 request_id=req.id)
    return req


def acknowledge_receipt(session: Session, deps: Deps, *, user: User, request_id: int,
                        now: datetime, ip: str | None) -> SignatureRequest:
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    if user.role != Role.RECIPIENT:
        raise Forbidden("Only the destination service acknowledges receipt.")
    if req.state == RequestState.RECEIVED:
        return req  # a double submit is not an error
    if req.state != RequestState.DELIVERED:
        raise Conflict(f"This request is {req.state}; there is nothing to acknowledge.")
    req.state, req.acknowledged_by_id, req.acknowledged_at, req.updated_at = (
        RequestState.RECEIVED, user.id, now, now)
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.received",
                 request_id=req.id, sha256=req.signed_sha256)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "received"}, now=now)
    return req


def escalate_due(session: Session, deps: Deps, *, now: datetime, limit: int = 100) -> list[int]:
    """Move every overdue pending request one rung up the ladder (or to EXPIRED).
    Safe to run from several workers: rows are claimed with SKIP LOCKED."""
    due = session.scalars(
        select(SignatureRequest)
        .where(SignatureRequest.state == RequestState.PENDING, SignatureRequest.deadline_at <= now)
        .order_by(SignatureRequest.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    touched: list[int] = []
    for req in due:
        if req.escalation_level + 1 >= deps.escalation_levels:
            req.state, req.updated_at = RequestState.EXPIRED, now
            req.failure_reason = "Nobody signed before the last escalation deadline."
            session.flush()
            audit.append(session, now=now, actor=SYSTEM, action="request.expired", request_id=req.id,
                         level=req.escalation_level)
            outbox.enqueue(session, "notify", {"request": req.id, "event": "expired"}, now=now)
        else:
            req.escalation_level += 1
            req.deadline_at = _deadline(deps, req.urgency, now)
            req.updated_at = now
            session.flush()
            audit.append(session, now=now, actor=SYSTEM, action="request.escalated",
                         request_id=req.id, level=req.escalation_level)
            outbox.enqueue(session, "notify",
                           {"request": req.id, "event": "escalated", "level": req.escalation_level},
                           now=now)
        touched.append(req.id)
    return touched


def removed_content(req: SignatureRequest) -> Sequence[str]:
    try:
        value = json.loads(req.removed_content or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def current_crls(session: Session, deps: Deps, *, now: datetime) -> list[bytes]:
    return [revocation.crl(session, deps.keys, issuer=i, now=now) for i in ("root", "issuing")]


def verify_document(session: Session, deps: Deps, *, user: User, request_id: int,
                    now: datetime) -> validation.ValidationReport:
    """Validate the delivered file against the hospital root only."""
    doc = document_for(session, deps, user=user, request_id=request_id, now=now, ip=None)
    return validation.validate_pdf(doc.data, trust_roots=[deps.keys.root_cert],
                                crls=current_crls(session, deps, now=now), now=now)


def signatures_of(session: Session, request_id: int) -> list[Signature]:
    return list(session.scalars(
        select(Signature).where(Signature.request_id == request_id).order_by(Signature.id)))


def colleagues(session: Session, *, user: User, req: SignatureRequest, now: datetime) -> list[User]:
    """Physicians a request can be delegated to: on call for its group now, or its head."""
    people = oncall.on_call(session, req.group_id, now)
    if req.group.head is not None and req.group.head.active:
        people.append(req.group.head)
    return [p for p in dict.fromkeys(people) if p.id != user.id]


def take_request(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
                 ip: str | None) -> SignatureRequest:
    """'I am on it': the technician and colleagues see who is handling it."""
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    _require_signer(session, user, req, now, deps)
    if req.assignee_id == user.id:
        return req
    req.assignee_id, req.updated_at = user.id, now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.taken",
                 request_id=req.id, group=req.group_id, step=req.step)
    return req


def delegate_request(session: Session, deps: Deps, *, user: User, request_id: int,
                     to_user_id: int, now: datetime, ip: str | None) -> SignatureRequest:
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    _require_signer(session, user, req, now, deps)
    target = next((c for c in colleagues(session, user=user, req=req, now=now)
                   if c.id == to_user_id), None)
    if target is None:
        raise InvalidInput("Delegate to a colleague on call for this group.")
    req.assignee_id, req.updated_at = target.id, now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.delegated",
                 request_id=req.id, to=target.id, group=req.group_id, step=req.step)
    outbox.enqueue(session, "notify", {"request": req.id, "event": "delegated"}, now=now)
    return req


STAMP_SIZE = (200.0, 70.0)  # points: room for name, ID, date and reason


def set_stamp_position(session: Session, deps: Deps, *, user: User, request_id: int, page: int,
                       fx: float, fy: float, now: datetime, ip: str | None) -> SignatureRequest:
    """Place the visible stamp where the technician tapped on the preview.

    (fx, fy) are fractions of the rendered page from its top-left corner."""
    req = get_request(session, user=user, request_id=request_id, now=now, for_update=True)
    if user.role != Role.TECHNICIAN:
        raise Forbidden("Only the technician who sent a request places its stamp.")
    if req.state != RequestState.PENDING or req.signed_sha256 is not None:
        raise Conflict("The stamp can only be placed before the first signature.")
    if not (0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0) or not 1 <= page <= req.page_count:
        raise InvalidInput("Tap inside a page of the document.")
    llx, lly, urx, ury = page_box(deps.blobs.get(session, req.document_sha256), page)
    width, height = STAMP_SIZE
    width, height = min(width, urx - llx), min(height, ury - lly)
    cx = llx + fx * (urx - llx)
    cy = ury - fy * (ury - lly)  # the preview's y axis points down, PDF's up
    x1 = min(max(cx - width / 2, llx), urx - width)
    y1 = min(max(cy - height / 2, lly), ury - height)
    req.stamp_position = f"{page},{x1:.1f},{y1:.1f},{x1 + width:.1f},{y1 + height:.1f}"
    req.updated_at = now
    session.flush()
    audit.append(session, now=now, actor=actor_of(user, ip), action="request.stamp_placed",
                 request_id=req.id, position=req.stamp_position)
    return req


def page_box(pdf: bytes, page: int) -> tuple[float, float, float, float]:
    """The visible area (CropBox, else MediaBox) of a 1-based page, in points."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        if not 1 <= page <= len(doc.pages):
            raise InvalidInput("No such page.")
        box = doc.pages[page - 1].cropbox
        x1, y1, x2, y2 = (float(v) for v in box)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


@dataclass(frozen=True)
class Review:
    """What a physician's page about one request shows."""

    request: SignatureRequest
    signing: SigningForm | None
    colleagues: list[User]
    message: str | None
    signatures: list[Signature]


def review(session: Session, deps: Deps, *, user: User, request_id: int, now: datetime,
           ip: str | None) -> Review:
    req = get_request(session, user=user, request_id=request_id, now=now)
    form: SigningForm | None = None
    message: str | None = None
    if user.role != Role.PHYSICIAN:
        raise Forbidden("Only physicians review requests for signature.")
    try:
        form = prepare_signing(session, deps, user=user, request_id=request_id, now=now)
    except (Conflict, CredentialBlocked, Forbidden) as exc:
        message = exc.message
    audit.append(session, now=now, actor=actor_of(user, ip), action="document.viewed",
                 request_id=req.id, sha256=req.signed_sha256 or req.document_sha256,
                 pages=req.page_count)
    return Review(request=req, signing=form,
                  colleagues=colleagues(session, user=user, req=req, now=now) if form else [],
                  message=message, signatures=signatures_of(session, req.id))
