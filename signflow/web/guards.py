"""Role checks. Object-level checks live in core (workflow.may_view)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

import flask_login
from flask import redirect, request, url_for
from flask_login import current_user

from signflow.core.audit import log as audit
from signflow.core.errors import AccessDenied
from signflow.core.i18n import N_
from signflow.models import AuditAction
from signflow.web.context import current

F = TypeVar("F", bound=Callable[..., Any])


def roles(*allowed: str) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return redirect(url_for("auth.login", next=request.path))
            if current_user.role not in allowed:
                rc = current()
                audit.append(rc.session, now=rc.now, actor=rc.actor, action=AuditAction.ACCESS_DENIED,
                             path=request.path[:200])
                raise AccessDenied(N_("Your role does not give access to this page."))
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


# Flask-Login ships no type information; its decorator keeps the view's signature.
login_required = cast(Callable[[F], F], flask_login.login_required)


def safe_next(target: str | None) -> str | None:
    """Only same-site absolute paths: no scheme, no host, no backslash tricks."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 32 for c in target):
        return None
    return target
