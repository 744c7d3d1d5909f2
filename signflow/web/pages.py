"""The shapes the role pages share, written once: the signed-in user's requests (the
object-level check is core's, `access`), and a posted form that runs one core
operation and ends on a page with a message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from signflow.core.audit.log import Actor
from signflow.core.requests import access
from signflow.core.requests.deps import Deps
from signflow.models import Role, SignatureRequest
from signflow.web.context import RequestContext, current
from signflow.web.forms import FORM_EXPIRED, ConfirmForm, submitted
from signflow.web.guards import roles

FormT = TypeVar("FormT", bound=FlaskForm)
T = TypeVar("T")


def my_requests() -> list[SignatureRequest]:
    """The requests the signed-in user may see (their role decides which)."""
    rc = current()
    return access.list_requests(rc.session, user=rc.user, now=rc.now)


def my_request(request_id: int) -> SignatureRequest:
    """One request, if the signed-in user may see it (NotFound otherwise)."""
    rc = current()
    return access.get_request(rc.session, user=rc.user, request_id=request_id, now=rc.now)


def add_request_list(bp: Blueprint, role: Role, template: str, *, endpoint: str) -> None:
    """Serve GET / of `bp`, to `role` only: `template` showing the user's requests."""

    @roles(role)
    def request_list() -> str:
        return render_template(template, requests=my_requests())

    bp.add_url_rule("/", endpoint, request_list, methods=["GET"])


class RequestStep(Protocol):
    """A core transition of one request that needs nothing but the request (cancel,
    acknowledge, take)."""

    def __call__(self, session: Session, deps: Deps, *, actor: Actor, request_id: int,
                 now: datetime) -> object: ...


def confirmed_step(step: RequestStep, request_id: int, done: str, back_to: str) -> Response:
    """A one-button transition of request `request_id`, back on its page `back_to`."""
    return confirmed(lambda rc: step(rc.session, rc.deps, actor=rc.actor, request_id=request_id,
                                     now=rc.now), done, back_to, request_id=request_id)


def posted(form: FormT, operation: Callable[[RequestContext, FormT], T],
           done: str | Callable[[T], str], back_to: str, *, refusal: str | None = None,
           **url_values: Any) -> Response:
    """`form` checked (invalid: the one refusal, `refusal` or the fields' errors, and
    nothing done), then its one core operation, then `done` (or `done(result)`)
    shown on the page `back_to`."""
    result = operation(current(), submitted(form, refusal))
    # `done`: a message id (N_), translated here; a callable translates its own text.
    flash(_(done) if isinstance(done, str) else done(result), "success")
    return redirect(url_for(back_to, **url_values))


def confirmed(operation: Callable[[RequestContext], object], done: str, back_to: str,
              **url_values: Any) -> Response:
    """A one-button form (cancel, acknowledge, take, approve...): its token checked (an
    expired one is refused, nothing done), then the operation, `done` on `back_to`."""
    return posted(ConfirmForm(), lambda rc, _form: operation(rc), done, back_to,
                  refusal=FORM_EXPIRED, **url_values)
