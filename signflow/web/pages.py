"""The shapes the role pages share, written once: the signed-in user's requests (the
object-level check is core's, `access`), and a posted form that runs one core
operation and ends on a page with a message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import flash, redirect, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response

from signflow.core.requests import access
from signflow.models import SignatureRequest
from signflow.web.context import RequestContext, current
from signflow.web.forms import FORM_EXPIRED, ConfirmForm, submitted

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


def posted(form: FormT, operation: Callable[[RequestContext, FormT], T],
           done: str | Callable[[T], str], back_to: str, *, refusal: str | None = None,
           **url_values: Any) -> Response:
    """`form` checked (invalid: the one refusal, `refusal` or the fields' errors, and
    nothing done), then its one core operation, then `done` (or `done(result)`)
    shown on the page `back_to`."""
    result = operation(current(), submitted(form, refusal))
    flash(done if isinstance(done, str) else done(result), "success")
    return redirect(url_for(back_to, **url_values))


def confirmed(operation: Callable[[RequestContext], object], done: str, back_to: str,
              **url_values: Any) -> Response:
    """A one-button form (cancel, acknowledge, take, approve...): its token checked (an
    expired one is refused, nothing done), then the operation, `done` on `back_to`."""
    return posted(ConfirmForm(), lambda rc, _form: operation(rc), done, back_to,
                  refusal=FORM_EXPIRED, **url_values)
