"""A physician signing a request: the sign form, signing with the PIN-unlocked key,
the review page, the stamp position, and verifying the delivered file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy.orm import Session

from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import (
    Conflict,
    CredentialBlocked,
    Forbidden,
    InvalidInput,
    SignatureNotDelivered,
    WrongPin,
)
from signflow.core.i18n import N_, Msg, stored
from signflow.core.pades import sign as signing
from signflow.core.pades import validate as validation
from signflow.core.pdf.geometry import page_geometry, stamp_box
from signflow.core.pki import credentials as creds
from signflow.core.pki import crl as revocation
from signflow.core.requests import access as access
from signflow.core.requests import activation as activation
from signflow.core.requests import outbox as outbox
from signflow.core.requests import paging as paging
from signflow.core.requests import workflow as workflow
from signflow.core.requests.deps import Deps
from signflow.models import (
    AuditAction,
    JobKind,
    NotifyEvent,
    RequestState,
    Role,
    Signature,
    SignatureRequest,
    User,
)

SIGN_REASON = N_("Approved for transplant workflow")
log = logging.getLogger("signflow.signing")


@dataclass(frozen=True)
class SigningForm:
    """What the sign page needs: the exact bytes' hash and the activation token."""

    request: SignatureRequest
    document_sha256: str
    activation_token: str
    credential_serial: str


@dataclass(frozen=True)
class Review:
    """What a physician's page about one request shows."""

    request: SignatureRequest
    signing: SigningForm | None
    colleagues: list[User]
    # Why the page has no signing form (shown translated: the `translated` filter).
    message: Msg | None
    signatures: list[Signature]


def prepare_signing(session: Session, deps: Deps, *, user: User, request_id: int,
                    now: datetime) -> SigningForm:
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    access.require_signer(session, user, req, now, deps)
    credential = creds.active_credential(session, user.id)
    if credential is None:
        raise CredentialBlocked(N_("You have no signing credential yet: set your signing PIN first."))
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
    session: Session, deps: Deps, *, actor: Actor, request_id: int, pin: str,
    activation_token: str, shown_sha256: str, now: datetime,
) -> SignatureRequest:
    user, req = workflow.locked_for(session, actor, request_id, now)
    access.require_signer(session, user, req, now, deps)
    claims = activation.read(deps.activation_key, activation_token, now=now)
    if claims.user_id != user.id or claims.request_id != req.id:
        raise Forbidden(N_("This signing form belongs to another request. Reload the document."))
    if not (shown_sha256 == claims.document_sha256 == req.document_sha256):
        raise Conflict(N_("The document differs from the one you were shown. Reload it and sign again."))
    credential = creds.active_credential(session, user.id)
    if credential is None or credential.id != claims.credential_id:
        raise Forbidden(N_("Your signing credential changed since you opened the document. Reload it."))
    try:
        key = creds.unlock(session, deps.keys, credential, pin, now=now)
    except (WrongPin, CredentialBlocked) as exc:
        audit.append(session, now=now, actor=actor, action=AuditAction.SIGNATURE_PIN_REJECTED,
                     request_id=req.id, credential=credential.serial, problem=exc.code)
        raise
    used = activation.consume(session, claims, now=now)
    certificate = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
    document = deps.blobs.get(session, req.document_sha256)
    page, box = _parse_position(req.stamp_position)
    stamp = signing.Stamp(
        signer_name=user.display_name, professional_id=user.professional_id,
        reason=SIGN_REASON, when=now, timezone=deps.timezone, page=page, box=box,
        language=deps.language,
    )
    signed = signing.sign_pdf(
        document, key=key, certificate=certificate, keys=deps.keys, stamp=stamp,
        timestamper=deps.timestamper, level=deps.pades_level,
        crls=current_crls(session, deps, now=now),
    )
    _require_valid(session, deps, req, signed, actor=actor, serial=credential.serial, now=now)
    signed_sha = deps.blobs.put(session, signed, now=now)
    session.add(Signature(
        request_id=req.id, user_id=user.id, credential_id=credential.id,
        certificate_serial=credential.serial, sha256_before=req.document_sha256,
        sha256_after=signed_sha, activation_id=used.id, signed_at=now,
    ))
    sha_before = req.document_sha256
    req.signed_sha256, req.signed_by_id, req.signed_at = signed_sha, user.id, now
    req.failure_reason = None
    route = access.route_of(req)
    audit_fields: dict[str, Any] = dict(
        certificate_serial=credential.serial, sha256_before=sha_before, sha256_after=signed_sha,
        activation=used.id, level=deps.pades_level, factors=["password", "signing-pin"],
        group=req.group_id, step=req.step,
    )
    # The proof the checkpoint covers this signature should not wait for the next tick.
    outbox.enqueue(session, JobKind.CHECKPOINT, {"reason": AuditAction.REQUEST_SIGNED}, now=now)
    if req.step + 1 < len(route):
        # The next group signs the signed bytes (an approval signature on top).
        req.step += 1
        req.group_id = route[req.step]
        req.document_sha256 = signed_sha
        req.assignee_id = None
        req.escalation_level = 0
        req.deadline_at = workflow.deadline(session, deps, group_id=req.group_id, urgency=req.urgency,
                                            rung=0, now=now)
        workflow.record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_SIGNED,
                        notify=NotifyEvent.CREATED, ladder_level=0, next_group=req.group_id,
                        **audit_fields)
        return req
    req.state = RequestState.SIGNED
    workflow.record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_SIGNED,
                    **audit_fields)
    workflow.deliver(session, req, now=now)
    return req


def _require_valid(session: Session, deps: Deps, req: SignatureRequest, signed: bytes, *,
                   actor: Actor, serial: str, now: datetime) -> None:
    """The signed bytes pass the recipient's validator, or nothing is stored or
    delivered: the request stays pending with the reason, audited, and the
    physician may sign again (with a fresh form) or decline."""
    report = validation.validate_pdf(signed, trust_roots=[deps.keys.root_cert],
                                     crls=current_crls(session, deps, now=now), now=now)
    if report.ok:
        return
    problems = list(report.problems)
    log.warning("request %s: the signature by certificate %s did not validate, not delivered: %s",
                req.id, serial, "; ".join(problems))
    req.failure_reason = stored(Msg(
        N_("The signature made at %(when)s did not validate (%(problems)s), so nothing was "
           "delivered. The physician can sign again, or decline."),
        {"when": access.local_time(now, deps.timezone), "problems": problems}))
    workflow.record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_SIGNING_FAILED,
                    certificate_serial=serial, problems=problems, level=deps.pades_level,
                    group=req.group_id, step=req.step)
    raise SignatureNotDelivered(
        N_("Your signature was made but did not pass validation (%(problems)s), so nothing was "
           "delivered and the request is still waiting. Reload the page and sign again; if it "
           "fails again, decline it and call the technician."), params={"problems": problems})


def current_crls(session: Session, deps: Deps, *, now: datetime,
                 max_age: timedelta = revocation.CRL_REFRESH) -> list[bytes]:
    return [revocation.crl(session, deps.keys, issuer=i, now=now, max_age=max_age)
            for i in ("root", "issuing")]


def verify_document(session: Session, deps: Deps, *, user: User, request_id: int,
                    now: datetime) -> validation.ValidationReport:
    """Validate the delivered file against the hospital root only."""
    doc = access.document_for(session, deps, actor=Actor.of(user), request_id=request_id, now=now)
    return validation.validate_pdf(doc.data, trust_roots=[deps.keys.root_cert],
                                crls=current_crls(session, deps, now=now), now=now)
STAMP_SIZE = (200.0, 70.0)  # points: room for name, ID, date and reason


def set_stamp_position(session: Session, deps: Deps, *, actor: Actor, request_id: int, page: int,
                       fx: float, fy: float, now: datetime) -> SignatureRequest:
    """Place the visible stamp where the technician tapped on the preview.

    (fx, fy) are fractions of the rendered page from its top-left corner."""
    _user, req = workflow.locked_for(
        session, actor, request_id, now, role=Role.TECHNICIAN,
        refusal="Only the technician who sent a request places its stamp.")
    if req.state != RequestState.PENDING or req.signed_sha256 is not None:
        raise Conflict(N_("The stamp can only be placed before the first signature."))
    if not (0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0) or not 1 <= page <= req.page_count:
        raise InvalidInput(N_("Tap inside a page of the document."))
    # The preview shows the page as a reader does (cropped, rotated): the tap maps
    # back through that to the page's own coordinates.
    geometry = page_geometry(deps.blobs.get(session, req.document_sha256), page)
    x1, y1, x2, y2 = stamp_box(geometry, STAMP_SIZE, margin_pt=0.0, at=(fx, fy), page=page)
    req.stamp_position = f"{page},{x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}"
    workflow.record(session, req, actor=actor, now=now, action=AuditAction.REQUEST_STAMP_PLACED,
                    position=req.stamp_position)
    return req


def review(session: Session, deps: Deps, *, actor: Actor, request_id: int, now: datetime) -> Review:
    user = acting_user(session, actor)
    req = access.get_request(session, user=user, request_id=request_id, now=now)
    form: SigningForm | None = None
    message: Msg | None = None
    if user.role != Role.PHYSICIAN:
        raise Forbidden(N_("Only physicians review requests for signature."))
    try:
        form = prepare_signing(session, deps, user=user, request_id=request_id, now=now)
    except (Conflict, CredentialBlocked, Forbidden) as exc:
        message = Msg(exc.msgid, exc.params)
    audit.append(session, now=now, actor=actor, action=AuditAction.DOCUMENT_VIEWED,
                 request_id=req.id, sha256=req.signed_sha256 or req.document_sha256,
                 pages=req.page_count)
    paging.mark_seen(session, request_id=req.id, user_id=user.id, now=now)
    return Review(request=req, signing=form,
                  colleagues=access.colleagues(session, user=user, req=req, now=now) if form else [],
                  message=message, signatures=access.signatures_of(session, req.id))
