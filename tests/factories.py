"""Domain-level factories shared by the test modules: create, sign and acknowledge
requests through the core workflow (no HTTP), and small queries on the result.

Test modules import these instead of each other's private helpers, so that a test
module can be read, moved or deleted on its own."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from signflow.core.accounts import contacts, tokens
from signflow.core.accounts import users as accounts
from signflow.core.audit.log import Actor
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import signing as request_signing
from signflow.core.requests import workflow
from signflow.models import SignatureRequest, User
from tests.conftest import PIN, TEST_ACTOR
from tests.pdfs import make_pdf


def create_request(svc: Any, world: Any, *, urgency: str = "urgent", user_id: int | None = None) -> int:
    """A one-page consent uploaded by the technician (or `user_id`); returns its id."""
    upload = pdfcheck.normalise_upload(make_pdf(1, "Donor consent"), max_bytes=10**7, max_pages=50)
    with svc.sessions() as s, s.begin():
        req = workflow.create_request(
            s, svc.deps, actor=Actor.of(s.get(User, user_id or world.tech), "10.0.0.1"), now=svc.clock(),
            upload=upload, filename="consent.pdf", title="Donor consent (Mme X)",
            group_id=world.group, destination_id=world.destination, urgency=urgency)
        return int(req.id)


def put_first(svc: Any, user_id: int, channel_id: int) -> None:
    """`channel_id` moved to the head of its owner's order, as they do it (one place up
    at a time): the physicians of the test world start with their enrolment-verified
    e-mail first, and a test that adds a phone usually wants it tried first."""
    with svc.sessions() as s, s.begin():
        actor = Actor.of(s.get(User, user_id))
        while contacts.channels_of(s, user_id)[0].id != channel_id:
            contacts.move(s, actor=actor, channel_id=channel_id, earlier=True, now=svc.clock())


def create_request_from(svc: Any, world: Any, upload: pdfcheck.NormalisedPdf) -> int:
    """A routine request for an upload the test normalised itself; returns its id."""
    with svc.sessions() as s, s.begin():
        return int(workflow.create_request(
            s, svc.deps, actor=Actor.of(s.get(User, world.tech)), now=svc.clock(), upload=upload,
            filename="consent.pdf", title="Consent", group_id=world.group,
            destination_id=world.destination, urgency="routine",).id)


def sign_request(svc: Any, rid: int, user_id: int, pin: str = PIN) -> Any:
    """Open the signing form then sign, as the physician `user_id` would on the phone."""
    with svc.sessions() as s, s.begin():
        user = s.get(User, user_id)
        form = request_signing.prepare_signing(s, svc.deps, user=user, request_id=rid, now=svc.clock())
        return request_signing.sign_request(s, svc.deps, actor=Actor.of(user), request_id=rid, pin=pin,
                                     activation_token=form.activation_token,
                                     shown_sha256=form.document_sha256, now=svc.clock())


def acknowledge_receipt(svc: Any, rid: int, world: Any) -> None:
    """The destination's recipient acknowledges the delivered request."""
    with svc.sessions() as s, s.begin():
        workflow.acknowledge_receipt(
            s, svc.deps, actor=Actor.of(s.get(User, world.recipient)), request_id=rid, now=svc.clock())


def count(svc: Any, model: Any, *where: Any) -> int:
    """How many rows of `model` match `where`."""
    with svc.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def state_of(svc: Any, rid: int) -> str:
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        assert req is not None
        return str(req.state)


def integration_token(svc: Any, *, name: str = "his", destination_id: int | None = None,
                      group_id: int | None = None, scopes: tuple[str, ...] = ("read",),
                      days: int = 90) -> tokens.IssuedToken:
    """An integration account bound to `destination_id` (or `group_id`, or nothing),
    created on first use under `name`, and a fresh token for it; returns the IssuedToken."""
    with svc.sessions() as s, s.begin():
        user = s.scalar(select(User).where(User.username == name))
        if user is None:
            user = accounts.create_user(
                s, actor=TEST_ACTOR, now=svc.clock(), username=name, display_name=f"{name} system",
                role="integration", password="", destination_id=destination_id,
                submit_group_id=group_id)
        return tokens.create_api_token(s, actor=TEST_ACTOR, user=user, name=f"{name} token",
                                       scopes=scopes, days=days, now=svc.clock())


def last_sunday(year: int, month: int) -> date:
    """The last Sunday of `month` (March and October: Europe's clock changes)."""
    day = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)
