"""Who may see, read and act on a request: the object-level access rule, the
request lists, the documents a user may read, and the messages of a refused action."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from signflow.core.accounts.users import acting_user
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.errors import Conflict, Forbidden, NotFound
from signflow.core.i18n import N_, STATE_LABELS, Msg, label, messages_of, stored
from signflow.core.requests import oncall as oncall
from signflow.core.requests.deps import Deps
from signflow.models import AuditAction, OnCallGroup, RequestState, Role, Signature, SignatureRequest, User


@dataclass(frozen=True)
class Document:
    filename: str
    data: bytes
    sha256: str


def local_time(when: datetime, tz: str) -> str:
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def acts_as(user: User) -> Role:
    """The role whose access rules apply: an integration account acts as a recipient
    of its destination, or as a technician of the group it submits to (and then sees
    only what it submitted); one bound to neither acts on no request."""
    if user.role == Role.INTEGRATION:
        if user.destination_id is not None:
            return Role.RECIPIENT
        if user.submit_group_id is not None:
            return Role.TECHNICIAN
    return user.role


def may_view(session: Session, user: User, req: SignatureRequest, now: datetime) -> bool:
    """The one object-level access rule for requests."""
    if not user.active:
        return False
    match acts_as(user):
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
    return acts_as(user) in (Role.TECHNICIAN, Role.PHYSICIAN, Role.RECIPIENT) and may_view(
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
        raise NotFound(N_("No such request, or it is not yours to see."))
    return req


def list_requests(session: Session, *, user: User, now: datetime, limit: int = 200) -> list[SignatureRequest]:
    query = select(SignatureRequest).order_by(SignatureRequest.id.desc()).limit(limit)
    match acts_as(user):
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
    session: Session, deps: Deps, *, actor: Actor, request_id: int, now: datetime, download: bool = False,
) -> Document:
    """The bytes a user may read: the signed file once there is one, else the
    normalised upload (the exact bytes a physician previews and signs)."""
    user = acting_user(session, actor)
    req = get_request(session, user=user, request_id=request_id, now=now)
    if not may_read_document(session, user, req, now):
        raise Forbidden(N_("Your role cannot read documents."))
    if req.purged_at is not None:
        raise NotFound(N_("This document was removed after its retention period."))
    sha = req.signed_sha256 or req.document_sha256
    data = deps.blobs.get(session, sha)
    if download:
        audit.append(session, now=now, actor=actor, action=AuditAction.DOCUMENT_DOWNLOADED,
                     request_id=req.id, sha256=sha)
    stem = req.filename.removesuffix(".pdf")
    return Document(filename=f"{stem}-signed.pdf" if req.signed_sha256 else req.filename,
                    data=data, sha256=sha)


def handled_by(session: Session, req: SignatureRequest, user: User) -> bool:
    if req.declined_by_id == user.id:
        return True
    return session.scalar(select(Signature.id).where(
        Signature.request_id == req.id, Signature.user_id == user.id).limit(1)) is not None


def route_of(req: SignatureRequest) -> list[int]:
    return [step.group_id for step in req.route] or [req.group_id]


def _route_groups(session: Session, req: SignatureRequest) -> list[OnCallGroup]:
    groups = [session.get(OnCallGroup, g) for g in route_of(req)]
    return [g for g in groups if g is not None]


def state_message(req: SignatureRequest, tz: str) -> Msg:
    """Why `req` can no longer be signed (a message id with its parameters)."""
    if req.state in (RequestState.SIGNED, RequestState.DELIVERED, RequestState.RECEIVED):
        when = local_time(req.signed_at, tz) if req.signed_at else ""
        if req.signed_by is None:
            return Msg(N_("Already signed by another physician at %(when)s."), {"when": when})
        return Msg(N_("Already signed by %(name)s at %(when)s."),
                   {"name": req.signed_by.display_name, "when": when})
    if req.state == RequestState.DECLINED:
        if req.declined_by is None:
            return Msg(N_("Already declined by a physician."))
        return Msg(N_("Already declined by %(name)s."), {"name": req.declined_by.display_name})
    return Msg(N_("This request is %(state)s; it can no longer be signed."),
               {"state": Msg(label(STATE_LABELS, req.state))})


def step_message(req: SignatureRequest, tz: str) -> Msg:
    who = req.signed_by.display_name if req.signed_by else None
    when = local_time(req.signed_at, tz) if req.signed_at else ""
    if who is None:
        return Msg(N_("Already signed by another physician at %(when)s; it now awaits %(group)s."),
                   {"when": when, "group": req.group.name})
    return Msg(N_("Already signed by %(name)s at %(when)s; it now awaits %(group)s."),
               {"name": who, "when": when, "group": req.group.name})


def conflict(message: Msg) -> Conflict:
    return Conflict(message.msgid, params=message.params)


def require_signer(session: Session, user: User, req: SignatureRequest, now: datetime,
                    deps: Deps) -> None:
    if user.role == Role.PHYSICIAN and req.state == RequestState.PENDING:
        if oncall.may_act_for_group(session, user, req.group, now):
            return
        done = _route_groups(session, req)[: req.step]
        if any(oncall.may_act_for_group(session, user, g, now) for g in done):
            # Someone of this physician's group signed this step first.
            raise conflict(step_message(req, deps.timezone))
    if user.role == Role.PHYSICIAN and req.state != RequestState.PENDING:
        raise conflict(state_message(req, deps.timezone))
    raise Forbidden(N_("Only a physician on call for this group can act on this request."))


def colleagues(session: Session, *, user: User, req: SignatureRequest, now: datetime) -> list[User]:
    """Physicians a request can be delegated to: on call for its group now, or its head."""
    people = oncall.on_call(session, req.group_id, now)
    if req.group.head is not None and req.group.head.active:
        people.append(req.group.head)
    return [p for p in dict.fromkeys(people) if p.id != user.id]


def signatures_of(session: Session, request_id: int) -> list[Signature]:
    return list(session.scalars(
        select(Signature).where(Signature.request_id == request_id).order_by(Signature.id)))


def upload_report(removed: Sequence[str], notices: Sequence[Msg]) -> str:
    """What the upload check reported, as stored in `removed_content`: a JSON list of
    what was removed (the format since 0.1), or, when there are notices too, an
    object {"removed": [...], "notices": [{"msgid", "params"}...]} (notices were
    English text before they were translated; both read back)."""
    if not notices:
        return json.dumps(list(removed))
    return json.dumps({"removed": list(removed),
                       "notices": [json.loads(stored(notice)) for notice in notices]})


def _upload_report(req: SignatureRequest) -> dict[str, list[object]]:
    try:
        value = json.loads(req.removed_content or "[]")
    except ValueError:
        return {}
    if isinstance(value, list):
        value = {"removed": value}
    if not isinstance(value, dict):
        return {}
    return {key: list(items) for key, items in value.items() if isinstance(items, list)}


def removed_content(req: SignatureRequest) -> Sequence[str]:
    """What the upload check removed from the document, in words."""
    return [str(item) for item in _upload_report(req).get("removed", [])]


def upload_notices(req: SignatureRequest) -> Sequence[Msg]:
    """What else the upload check told the technician (a PDF/A claim kept or removed...)."""
    return messages_of(_upload_report(req).get("notices", []))
