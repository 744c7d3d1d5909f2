"""What every command group shares: its settings, the operator actor, and the
services a command runs with, built and disposed of in one place."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from signflow.config import Settings, load_settings
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.core.clock import utcnow
from signflow.db import make_engine, make_session_factory
from signflow.models import AuditAction, ServiceRole, User
from signflow.services import Services, build_services

OPERATOR = Actor(id=None, name="cli", role=ServiceRole.OPERATOR)


class CliError(Exception):
    """A usage problem: printed as one line, exit status 2."""


def settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


@contextmanager
def operator_services(config: Settings | None = None) -> Iterator[Services]:
    """The services one command runs with; their database connections are closed
    when the command ends, whatever happens."""
    svc = build_services(config if config is not None else settings())
    try:
        yield svc
    finally:
        svc.engine.dispose()


def record_key_event(config: Settings, action: AuditAction, **details: Any) -> None:
    """Key material changed outside any request: audited in a transaction of its own."""
    engine = make_engine(config.database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            audit.append(session, now=utcnow(), actor=OPERATOR, action=action, **details)
    finally:
        engine.dispose()


def write_secret(path: Path, value: str) -> None:
    """A new secret file, readable by its owner only; never overwrites one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def user_by_name(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.lower()))
    if user is None:
        raise CliError(f"no user named {username!r}")
    return user
