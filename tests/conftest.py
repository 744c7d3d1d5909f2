"""Shared fixtures: real keys, a real database (SQLite, and PostgreSQL when
SIGNFLOW_TEST_DATABASE_URL is set), the real app with CSRF on."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import URL, Engine, create_engine, delete, make_url, text

from signflow.app import create_app
from signflow.config import Settings
from signflow.core.accounts import enrolment
from signflow.core.accounts import signing_pin as credentials
from signflow.core.accounts import users as accounts
from signflow.core.audit.log import Actor
from signflow.core.notify.channels import LogNotifier
from signflow.core.pki import keystore as pki
from signflow.core.pki import seal as seal
from signflow.db import sqlite_file
from signflow.migrate import upgrade
from signflow.models import Destination, Job, JobKind, OnCallGroup, Role, RotaShift, User
from signflow.services import PASSPHRASE_FILE, Services, build_services
from tests import snapshots
from tests.snapshots import Snapshot
from tests.softhsm import make_tokens
from tests.tools import missing

PASSPHRASE = "test-keys-passphrase-0123456789abcdef"
PASSWORD = "correct horse battery staple"
# Dr Lefèvre's RPPS number (11 digits, Luhn check digit), printed on her stamp.
DOC_RPPS = "10001234565"
PIN = "428613"
# Near the real time: pyHanko checks certificates and CRLs against the wall clock.
T0 = datetime.now(UTC).replace(microsecond=0)
TEST_ACTOR = Actor(id=None, name="test", role="operator")
PG_URL = os.environ.get("SIGNFLOW_TEST_DATABASE_URL")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    pki.init_keys(path, passphrase=PASSPHRASE.encode(), now=T0 - timedelta(days=1),
                  base_url="http://127.0.0.1:5000")
    seal.ensure_seal(path, pki.load_keys(path, passphrase=PASSPHRASE.encode()),
                     passphrase=PASSPHRASE.encode(), now=T0 - timedelta(days=1))
    return path


def reset_postgres(url: str) -> None:
    """Empty the database at `url` (one worker's own: see `postgres_url`)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def worker_database_url(base_url: str, worker: str) -> URL:
    """The database of one xdist worker (gw0, gw1... or "main" without xdist): named after
    the database in SIGNFLOW_TEST_DATABASE_URL, on the same server. That database itself is
    never touched, so several people may point at one server without resetting each other."""
    url = make_url(base_url)
    return url.set(database=f"{url.database}_{worker}")


def _maintenance(url: URL) -> Engine:
    # CREATE/DROP DATABASE cannot run in a transaction nor from inside the database.
    return create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """This worker's own PostgreSQL database, created empty and dropped at the end of the
    session: workers run tests in parallel and each test resets the database it uses."""
    if not PG_URL:
        missing("SIGNFLOW_TEST_DATABASE_URL is not set")
    url = worker_database_url(PG_URL, os.environ.get("PYTEST_XDIST_WORKER", "main"))
    admin = _maintenance(url)
    quoted = admin.dialect.identifier_preparer.quote(url.database or "")
    with admin.connect() as conn:
        # A previous session killed before its teardown may have left it behind.
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {quoted}"))
        # Commits do not wait for the WAL to reach the disk (on a busy machine that wait
        # was most of a commit): what the tests check (transactions, locks, what each
        # connection sees, an app server killed mid-request) is unchanged; only a crash
        # of the PostgreSQL server itself could lose the last commits of a test database.
        conn.execute(text(f"ALTER DATABASE {quoted} SET synchronous_commit = off"))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SoftHSM2 configuration (SOFTHSM2_CONF) holding all of tests.softhsm.TOKENS."""
    return make_tokens(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once by `signflow init`'s own code path, copied per test."""
    path = tmp_path_factory.mktemp("template") / "signflow.db"
    upgrade(f"sqlite:///{path}")
    return path


def fresh_sqlite(template: Path, folder: Path) -> str:
    target = folder / "signflow.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def postgres_migrated(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """This worker's database migrated once, as a snapshot `database_url` restores per test
    (a full upgrade per test cost over a second)."""
    reset_postgres(postgres_url)
    upgrade(postgres_url)
    return snapshots.take(postgres_url, tmp_path_factory.mktemp("postgres"))


def fresh_postgres(url: str, migrated: Snapshot) -> str:
    """The database at `url` emptied back to `migrated`; rebuilt from scratch if a test
    changed its schema (dropped it, downgraded it...)."""
    if not snapshots.restore(url, migrated):
        reset_postgres(url)
        upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path) -> str:
    if request.param == "sqlite":
        return fresh_sqlite(migrated_sqlite, tmp_path)
    return fresh_postgres(request.getfixturevalue("postgres_url"),
                          request.getfixturevalue("postgres_migrated"))


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    return fresh_sqlite(migrated_sqlite, tmp_path)


def make_settings(instance: Path, keys: Path, database_url: str, **overrides: object) -> Settings:
    instance.mkdir(parents=True, exist_ok=True)
    (instance / PASSPHRASE_FILE).write_text(PASSPHRASE)
    values: dict[str, object] = dict(
        env="testing", instance_path=instance, keys_path=keys, database_url=database_url,
        secret_key="t" * 48, base_url="http://127.0.0.1:5000", timezone="Europe/Paris",
        pades_level="B-LTA",
        # The existing tests read English; the French interface has its own tests
        # (test_i18n.py, test_i18n_documents.py), which ask for language="fr".
        language="en",
        # Second factor is exercised in tests/test_mfa.py; elsewhere logins are password-only
        # so that one test can log the same user in several times within a TOTP step.
        mfa_roles="",
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "instance", keys_dir, database_url)


@pytest.fixture(scope="session")
def key_material(keys_dir: Path) -> pki.KeyMaterial:
    return pki.load_keys(keys_dir, passphrase=PASSPHRASE.encode())


@pytest.fixture
def svc(settings: Settings, clock: Clock, keys_dir: Path,
        key_material: pki.KeyMaterial) -> Iterator[Services]:
    # Shared key material unless a test points the settings at keys of its own.
    keys = key_material if settings.keys_path == keys_dir and not settings.pkcs11_module else None
    services = build_services(settings, clock=clock, notifier=LogNotifier(), keys=keys)
    yield services
    services.engine.dispose()


@dataclass
class World:
    """One of everything: the demo shape, with known passwords and PIN."""

    tech: int
    tech2: int
    doc: int
    backup: int
    head: int
    offduty: int
    recipient: int
    other_recipient: int
    auditor: int
    admin: int
    manager: int
    group: int
    other_group: int
    destination: int
    other_destination: int


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One real argon2id hash of PASSWORD, shared by the test users: hashing is
    deliberately slow (46 MiB), and ten per test would dominate the suite."""
    return accounts.hash_password(PASSWORD)


def enrol_physician(session: Any, keys: pki.KeyMaterial, physician: User, pin: str, *,
                    now: datetime) -> Any:
    """First enrolment as the physician does it: the code sent to their address, then the PIN."""
    code = enrolment.send_code(session, keys.master_key, actor=Actor.of(physician), now=now)
    return credentials.set_signing_pin(session, keys, actor=Actor.of(physician), current_pin=None,
                                       new_pin=pin, now=now, enrolment_code=code)


@dataclass(frozen=True)
class WorldSnapshot:
    world: World
    before: tuple[Any, ...]  # the database's state it was built on (snapshots.state)
    snapshot: Snapshot


@pytest.fixture(scope="session")
def world_snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[Any, WorldSnapshot], Path]:
    return {}, tmp_path_factory.mktemp("worlds")


@pytest.fixture
def world(svc: Services, clock: Clock, password_hash: str, key_material: pki.KeyMaterial,
          world_snapshots: tuple[dict[Any, WorldSnapshot], Path]) -> World:
    return shared_world(svc, clock(), password_hash, key_material, *world_snapshots)


def shared_world(svc: Services, now: datetime, password_hash: str, shared_keys: pki.KeyMaterial,
                 built: dict[Any, WorldSnapshot], folder: Path) -> World:
    """`make_world`, built once per worker and database kind, then restored from a snapshot
    (it cost about a second per test: four enrolments). Within a session the world is the
    same each time: T0, the key material and the password hash are session-wide. Only on
    the session's keys (certificates from other keys are other certificates), and only
    onto the state the snapshot was built on (else what a fixture wrote would be lost)."""
    url = svc.settings.database_url
    if svc.keys is not shared_keys or url.startswith("sqlite") and sqlite_file(url) is None:
        return make_world(svc, now, password_hash)
    key = (svc.engine.dialect.name, now, password_hash)
    known = built.get(key)
    if known is not None and snapshots.restore(url, known.snapshot, expect=known.before):
        return replace(known.world)  # a copy: a test may change its own
    before = snapshots.state(url)
    world = make_world(svc, now, password_hash)
    if known is None:
        built[key] = WorldSnapshot(replace(world), before, snapshots.take(url, folder))
    return world


def make_world(svc: Services, now: datetime, password_hash: str) -> World:
    """The demo shape in `svc`'s database (for fixtures of a wider scope than `world`)."""
    real_hash = accounts.hash_password
    with pytest.MonkeyPatch.context() as patch, svc.sessions() as s, s.begin():
        patch.setattr(accounts, "hash_password",
                      lambda pw: password_hash if pw == PASSWORD else real_hash(pw))
        dest = Destination(name="Transplant service", email="transplant@hospital.example")
        other_dest = Destination(name="Cardiology")
        s.add_all([dest, other_dest])
        s.flush()

        def user(name: str, role: str, **kw: object) -> User:
            return accounts.create_user(
                s, actor=TEST_ACTOR, now=now, username=name, display_name=kw.pop("display", name),
                role=role, password=PASSWORD, email=f"{name}@hospital.example", **kw)  # type: ignore[arg-type]

        tech = user("tech", Role.TECHNICIAN)
        tech2 = user("tech2", Role.TECHNICIAN)
        doc = user("doc", Role.PHYSICIAN, display="Dr Hélène Lefèvre", professional_id=DOC_RPPS)
        backup = user("backup", Role.PHYSICIAN, display="Dr Łukasz Nowak", professional_id="10007654329")
        head = user("head", Role.PHYSICIAN, display="Pr Øyvind Berg", professional_id="10009999995")
        offduty = user("offduty", Role.PHYSICIAN, display="Dr Off Duty", professional_id="10000000009")
        recipient = user("recipient", Role.RECIPIENT, destination_id=dest.id)
        other_recipient = user("cardio", Role.RECIPIENT, destination_id=other_dest.id)
        auditor = user("auditor", Role.AUDITOR)
        admin = user("admin", Role.ADMIN)
        manager = user("manager", Role.MANAGER)
        group = OnCallGroup(name="Anaesthesia on call", head_user_id=head.id)
        other_group = OnCallGroup(name="Cardiology on call")
        s.add_all([group, other_group])
        s.flush()
        shift = dict(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1))
        s.add_all([
            RotaShift(group_id=group.id, user_id=doc.id, level=0, **shift),
            RotaShift(group_id=group.id, user_id=backup.id, level=1, **shift),
            RotaShift(group_id=other_group.id, user_id=offduty.id, level=0, **shift),
        ])
        for physician in (doc, backup, head, offduty):
            enrol_physician(s, svc.keys, physician, PIN, now=now)
        # The world starts after those codes went out: the outbox is empty.
        s.execute(delete(Job).where(Job.kind == JobKind.ACCOUNT_NOTICE))
        return World(
            tech=tech.id, tech2=tech2.id, doc=doc.id, backup=backup.id, head=head.id,
            offduty=offduty.id, recipient=recipient.id, other_recipient=other_recipient.id,
            auditor=auditor.id, admin=admin.id, manager=manager.id, group=group.id,
            other_group=other_group.id,
            destination=dest.id, other_destination=other_dest.id,
        )


@pytest.fixture
def app(svc: Services, settings: Settings) -> Flask:
    return create_app(settings, services=svc)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """`app` over real HTTP, for the browser tests."""
    from tests.a11y import live_server  # a11y imports this module: import late

    with live_server(app) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright (tests/a11y.py: chromium)."""
    from tests.a11y import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def delivered(app: Flask, world: World) -> tuple[int, FlaskClient]:
    """A request signed and delivered through the routes: its id and the technician's
    logged-in client (what the API tests start from)."""
    from tests.helpers import delivered_request  # helpers imports this module: import late

    rid, tech, _doc = delivered_request(app, world)
    return rid, tech


_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1) or match.group(2)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> None:
    token = csrf_token(client, "/login")
    resp = client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than there are cores. A good part of the suite waits on
    other processes (the PDF sandbox, signflow commands, Chromium, slapd, Node.js), so two
    workers on two cores left them idle; measured on 2 cores: 676 s with 2, 632 s with 3."""
    return (os.cpu_count() or 1) + 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The PDF corpus prints one line per generated file (tests/corpus.py: Summary).
    from tests.corpus_summary import SUMMARY

    SUMMARY.collect(report)


def pytest_terminal_summary(terminalreporter: object) -> None:
    from tests.corpus_summary import SUMMARY

    SUMMARY.write(terminalreporter)
