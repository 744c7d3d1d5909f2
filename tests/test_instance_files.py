"""What an operator's instance holds is theirs alone (issue 10, point 6): instance
files are 0600 and folders 0700, and `signflow demo` never touches an instance it
did not create. Real `signflow` processes, as an operator runs them."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from sqlalchemy import create_engine, select

from signflow.config import load_settings
from signflow.core.audit import log as audit
from signflow.core.audit.log import Actor
from signflow.models import AuditAction, AuditEntry, User
from signflow.services import build_services
from tests.tools import free_port, run_cli

ADMIN_PASSWORD = "Quartz-lighthouse-47-ember"


def _env(tmp_path: Path, name: str = "", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(tmp_path / f"instance{name}"),
               SIGNFLOW_KEYS=str(tmp_path / f"keys{name}"), **extra)
    return env


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder.parent)): stat.S_IMODE(p.stat().st_mode)
            for p in [folder, *sorted(folder.rglob("*"))]}


def _loose(folder: Path) -> dict[str, str]:
    """Everything group or others may read, write or enter."""
    return {name: oct(mode) for name, mode in _modes(folder).items() if mode & 0o077}


def _digest(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if folder.exists() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_init_leaves_nothing_readable_by_others(tmp_path):
    env = _env(tmp_path)
    result = run_cli(["init"], env)
    assert result.returncode == 0, result.stderr
    instance, keys = tmp_path / "instance", tmp_path / "keys"
    assert (instance / "signflow.db").is_file()
    assert _loose(instance) == {} and _loose(keys) == {}
    # The live database's WAL and shared-memory files too, while the service writes.
    svc = build_services(load_settings(environ=env, env="development"))
    try:
        with svc.sessions() as s, s.begin():
            audit.append(s, now=svc.clock(), actor=Actor(id=None, name="t", role="operator"),
                         action=AuditAction.DEMO_SEEDED)
            assert (instance / "signflow.db-wal").exists()
            assert _loose(instance) == {}
    finally:
        svc.engine.dispose()


def test_init_tightens_an_older_instance(tmp_path):
    env = _env(tmp_path)
    assert run_cli(["init"], env).returncode == 0
    database = tmp_path / "instance" / "signflow.db"
    database.chmod(0o644)  # what releases before this one left
    result = run_cli(["init"], env)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert _loose(tmp_path / "instance") == {}


def _production(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An instance made by `signflow init`, with its real admin."""
    env = _env(tmp_path, **extra)
    assert run_cli(["init"], env).returncode == 0
    created = run_cli(["create-user", "alice", "--role", "admin", "--name", "Alice Real"],
                      dict(env, SIGNFLOW_NEW_PASSWORD=ADMIN_PASSWORD))
    assert created.returncode == 0, created.stderr
    return env


def _demo(env: dict[str, str]):
    return run_cli(["demo", "--host", "127.0.0.1", "--port", str(free_port())], env, timeout=60)


def test_demo_refuses_an_instance_made_by_init(tmp_path):
    env = _production(tmp_path)
    before = _digest(tmp_path / "instance", tmp_path / "keys")
    result = _demo(env)
    assert result.returncode == 2
    assert "was not created by `signflow demo`" in result.stderr
    assert "nothing was changed" in result.stderr
    assert "password" not in result.stdout and "demo-" not in result.stdout
    # Not one byte of the instance, its database or its keys changed.
    assert _digest(tmp_path / "instance", tmp_path / "keys") == before
    engine = create_engine(f"sqlite:///{tmp_path / 'instance' / 'signflow.db'}")
    try:
        with engine.connect() as conn:
            assert set(conn.scalars(select(User.username))) == {"alice"}
            assert not conn.scalars(select(AuditEntry).where(
                AuditEntry.action == AuditAction.DEMO_SEEDED)).all()
    finally:
        engine.dispose()


def test_demo_refuses_a_production_database_behind_empty_folders(tmp_path):
    database = tmp_path / "shared" / "signflow.db"
    database.parent.mkdir()
    url = f"sqlite:///{database}"
    _production(tmp_path, SIGNFLOW_DATABASE_URL=url)
    before = _digest(database.parent)
    # New, empty folders, but the production database.
    result = _demo(_env(tmp_path, "-demo", SIGNFLOW_DATABASE_URL=url))
    assert result.returncode == 2
    assert "was not created by `signflow demo`" in result.stderr
    assert not (tmp_path / "instance-demo").exists() and not (tmp_path / "keys-demo").exists()
    assert _digest(database.parent) == before
