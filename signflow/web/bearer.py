"""Bearer-token calls (the API and /tsa): who calls, with which scope, and one audit
entry per call whatever its outcome."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request
from sqlalchemy.orm import Session

from signflow.core.accounts import tokens
from signflow.core.errors import AuthenticationFailed, SignflowError
from signflow.models import ApiScope
from signflow.web.context import current, record_refusal

F = TypeVar("F", bound=Callable[..., Any])


def caller() -> tokens.Bearer:
    found: tokens.Bearer = g.bearer
    return found


def bearer_required(scope: ApiScope, *, rate_limited: bool = False) -> Callable[[F], F]:
    """The view runs for an integration token carrying `scope`: 401 for any token that
    does not authenticate (one answer for every reason), 403 for a missing scope;
    `rate_limited`: 429 past SIGNFLOW_API_RATE_PER_MINUTE calls of the token."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            rc = current()
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationFailed(tokens.REFUSED)
            call = f"{request.method} {request.path}"
            bearer = tokens.authenticate_bearer(rc.session, token.strip(), now=rc.now, ip=rc.ip,
                                                call=call)
            g.bearer, g.api_user = bearer, bearer.user
            limiter = rc.services.api_limiter if rate_limited else None
            counted = False
            try:
                bearer.require(scope)
                if limiter is not None:
                    limiter.hit(rc.session, bearer.token_id, now=rc.now)
                    counted = True
                result = view(*args, **kwargs)
            except SignflowError as exc:
                outcome = f"refused:{exc.code}"
                recount = limiter is not None and counted and not exc.commit_changes

                def write(session: Session) -> None:
                    if recount and limiter is not None:
                        limiter.count_again(session, bearer.token_id, now=rc.now)
                    tokens.record_use(session, bearer.token_id, now=rc.now, ip=rc.ip, call=call,
                                      outcome=outcome)

                record_refusal(exc, write)
                raise
            tokens.record_use(rc.session, bearer.token_id, now=rc.now, ip=rc.ip, call=call,
                              outcome="ok")
            return result

        return wrapped  # type: ignore[return-value]

    return decorator
