"""What a view works with, and the one transaction policy of the web layer.

A view gets its database session, services, user, clock and client address
from `current()`. It never commits: `in_one_transaction` wraps every view
when the app is built, commits once when the view returns, keeps the changes
of a refusal that must be recorded (`SignflowError.commit_changes`: failure
counters, their audit entries) and rolls back everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app, g, request
from flask_login import current_user
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from signflow.config import Settings
from signflow.core.audit.log import Actor
from signflow.core.errors import Forbidden, SignflowError
from signflow.core.i18n import N_
from signflow.core.requests.deps import Deps
from signflow.models import User
from signflow.services import Services

P = ParamSpec("P")
R = TypeVar("R")


def services() -> Services:
    svc: Services = current_app.extensions["signflow"]
    return svc


WROTE = "signflow.wrote"


def session() -> Session:
    """One session, hence one transaction, per request (opened on first use)."""
    if "db" not in g:
        sess = services().sessions()
        event.listen(sess, "after_flush", _mark_written)
        event.listen(sess, "do_orm_execute", _mark_dml)
        g.db = sess
    opened: Session = g.db
    return opened


def _mark_written(sess: Session, _context: object) -> None:
    sess.info[WROTE] = True


def _mark_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[WROTE] = True


@dataclass(frozen=True)
class RequestContext:
    session: Session
    services: Services
    now: datetime
    ip: str | None

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def deps(self) -> Deps:
        return self.services.deps

    @property
    def user(self) -> User:
        """The authenticated user: the bearer token's on the API, the session's elsewhere.
        Only views behind a guard ask for it."""
        account = g.get("api_user")
        if account is None and current_user.is_authenticated:
            account = current_user._get_current_object()
        if not isinstance(account, User):
            raise Forbidden(N_("Log in first."))
        return account

    @property
    def actor(self) -> Actor:
        account = self.user
        return Actor(id=account.id, name=account.username, role=account.role, ip=self.ip)


def current() -> RequestContext:
    if "request_context" not in g:
        svc = services()
        g.request_context = RequestContext(session=session(), services=svc, now=svc.clock(),
                                           ip=request.remote_addr)
    ctx: RequestContext = g.request_context
    return ctx


def in_one_transaction(view: Callable[P, R]) -> Callable[P, R]:
    """Commit what the view did, once, when it returns; roll back when it raises,
    unless the refusal's changes must be kept (and then commit those)."""

    @wraps(view)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = view(*args, **kwargs)
        except SignflowError as exc:
            _finish(commit=exc.commit_changes or bool(g.pop(KEEP_REFUSAL_RECORD, False)))
            raise
        except BaseException:
            _finish(commit=False)
            raise
        _finish(commit=True)
        return result

    return run


KEEP_REFUSAL_RECORD = "signflow_keep_refusal_record"


def record_refusal(exc: SignflowError, write: Callable[[Session], None]) -> None:
    """A refused view must still leave a record (an API call is audited whatever its
    outcome): what the view changed is rolled back unless the refusal keeps its
    changes, then `write` runs and the refusal commits what it wrote."""
    sess = session()
    if not exc.commit_changes:
        sess.rollback()
    write(sess)
    g.setdefault(KEEP_REFUSAL_RECORD, True)


def _finish(*, commit: bool) -> None:
    sess: Session | None = g.get("db")
    if sess is None:
        return
    # A view that only read ends its transaction without a commit round trip.
    wrote = sess.info.pop(WROTE, False) or bool(sess.new or sess.dirty or sess.deleted)
    if commit and wrote:
        sess.commit()
    else:
        sess.rollback()


def close_session(_exc: BaseException | None) -> None:
    sess = g.pop("db", None)
    if sess is not None:
        sess.rollback()
        sess.close()
