"""Upgrading a database made by the previous release (0.1, schema revision 0001).

The fixture in tests/vectors/release_0_1/ was made by the previous release's
own code (see make.py there). Each test takes a copy of it, on SQLite (the
file itself) and on PostgreSQL (revision 0001 created by Alembic, then every
row copied in), runs the migrations to whatever the head is today, and checks
with the current code that nothing was lost and everything still works.
"""

from __future__ import annotations

# Imports from the current layout, in one block (modules are being split:
# update the paths here).
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import DateTime, MetaData, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from signflow.auditverify import verifier_key, verify_bundle
from signflow.core.audit.checkpoints import verify_log
from signflow.core.audit.log import Actor
from signflow.core.notify.channels import LogNotifier
from signflow.core.ops.restore import reset_sequences
from signflow.core.pades.validate import validate_pdf
from signflow.core.requests.access import route_of, signatures_of
from signflow.core.requests.signing import current_crls, prepare_signing, sign_request
from signflow.core.requests.workflow import acknowledge_receipt
from signflow.core.storage import sha256_hex
from signflow.migrate import alembic_config, upgrade
from signflow.models import AuditEntry, Checkpoint, Signature, SignatureRequest, User
from signflow.services import PASSPHRASE_FILE, Services, build_services
from tests.conftest import make_settings, reset_postgres

FIXTURE = Path(__file__).parent / "vectors" / "release_0_1"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text("utf-8"))
PREVIOUS_REVISION = "0001"
# Warn well before the fixture's certificates end (see make.py): regenerate it then.
HORIZON_MARGIN = timedelta(days=180)
COUNTED = {"requests": SignatureRequest, "users": User, "signatures": Signature,
           "audit_entries": AuditEntry, "checkpoints": Checkpoint}


def _route(session: Session, req: SignatureRequest) -> list[int]:
    """The request's groups, in signing order, as the current code reads them."""
    return route_of(req)


# -- the upgraded database ------------------------------------------------------


def _copy_keys(folder: Path) -> Path:
    """A private copy (git does not keep the 0600 modes; the code may add files)."""
    keys = folder / "keys"
    shutil.copytree(FIXTURE / "keys", keys)
    keys.chmod(0o700)
    for path in keys.iterdir():
        path.chmod(0o600)
    return keys


def _fixture_sqlite_url(folder: Path) -> str:
    target = folder / "signflow.db"
    shutil.copyfile(FIXTURE / "signflow.db", target)
    return f"sqlite:///{target}"


def _utc(value: Any) -> Any:
    # SQLite hands back the naive UTC the old code stored; PostgreSQL wants aware.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def copy_rows(source_url: str, target_url: str) -> int:
    """Every row of every table of `source_url` into the same tables (same schema
    revision) of `target_url`, ids kept, sequences moved past them."""
    source, target = create_engine(source_url), create_engine(target_url)
    try:
        source_meta, target_meta = MetaData(), MetaData()
        source_meta.reflect(source)
        target_meta.reflect(target)
        assert set(source_meta.tables) == set(target_meta.tables)
        tables = [t for t in target_meta.sorted_tables if t.name != "alembic_version"]
        copied = 0
        with source.connect() as src, target.begin() as dst:
            for table in reversed(tables):
                dst.execute(table.delete())  # rows the migrations seed (the audit head)
            for table in tables:
                from_table = source_meta.tables[table.name]
                assert [c.name for c in from_table.columns] == [c.name for c in table.columns]
                times = {c.name for c in table.columns if isinstance(c.type, DateTime)}
                rows = [{k: _utc(v) if k in times else v for k, v in row._mapping.items()}
                        for row in src.execute(select(from_table))]
                if rows:
                    dst.execute(table.insert(), rows)
                    copied += len(rows)
            reset_sequences(dst, tables)
        return copied
    finally:
        source.dispose()
        target.dispose()


@pytest.fixture(scope="module")
def postgres_server(postgres_url: str) -> Iterator[str]:
    """A database of this module's own, `<base>_mig_<random>`, dropped at the end."""
    base = make_url(postgres_url)
    name = f"{base.database}_mig_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def upgraded_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The fixture's database, upgraded to today's head."""
    fixture_url = _fixture_sqlite_url(tmp_path)
    if request.param == "sqlite":
        url = fixture_url
    else:
        url = request.getfixturevalue("postgres_server")
        reset_postgres(url)
        command.upgrade(alembic_config(url), PREVIOUS_REVISION)
        assert copy_rows(fixture_url, url) > 0
    upgrade(url)
    return url


@pytest.fixture
def svc(upgraded_url: str, tmp_path: Path) -> Iterator[Services]:
    settings = make_settings(tmp_path / "instance", _copy_keys(tmp_path), upgraded_url,
                             secret_key=EXPECTED["secret_key"], audit_origin=EXPECTED["audit_origin"])
    # The fixture's keys are sealed with a passphrase of their own.
    (settings.instance_path / PASSPHRASE_FILE).write_text(EXPECTED["keys_passphrase"])
    services = build_services(settings, clock=lambda: datetime.now(UTC), notifier=LogNotifier())
    yield services
    services.engine.dispose()


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _signers(report: Any) -> list[str]:
    return [sig.signer for sig in report.signatures if not sig.is_timestamp]


def _validate(svc: Services, session: Session, data: bytes) -> Any:
    now = svc.clock()
    return validate_pdf(data, trust_roots=[svc.keys.root_cert],
                        crls=current_crls(session, svc.deps, now=now), now=now)


# -- the tests --------------------------------------------------------------------


def test_fixture_is_the_previous_schema():
    assert {r["state"] for r in EXPECTED["requests"].values()} >= {
        "pending", "delivered", "received", "declined", "cancelled", "expired"}
    engine = create_engine(f"sqlite:///{FIXTURE / 'signflow.db'}")
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == PREVIOUS_REVISION
            assert "requests" in inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_nothing_is_lost(svc):
    with svc.sessions() as s:
        assert {name: _count(s, model) for name, model in COUNTED.items()} == {
            name: EXPECTED["counts"][name] for name in COUNTED}
        for label, want in EXPECTED["requests"].items():
            req = s.get(SignatureRequest, want["id"])
            assert req is not None, label
            got = dict(state=req.state, escalation_level=req.escalation_level, step=req.step,
                       route=_route(s, req), group_id=req.group_id,
                       destination_id=req.destination_id, title=req.title, urgency=req.urgency,
                       document_sha256=req.document_sha256, signed_sha256=req.signed_sha256,
                       signers=[s.get(User, sig.user_id).display_name
                                for sig in signatures_of(s, req.id)])
            assert got == {k: want[k] for k in got}, label
            # The documents are there and decrypt to the bytes whose hash was audited.
            for sha in filter(None, (req.document_sha256, req.signed_sha256)):
                assert sha256_hex(svc.blobs.get(s, sha)) == sha, label
        users = {u.username: u.id for u in s.scalars(select(User))}
    assert users["tech"] == EXPECTED["users"]["tech"] and len(users) == len(EXPECTED["users"])


def test_audit_log_still_verifies_and_exports(svc, tmp_path):
    public_key = svc.keys.audit_key.public_key()
    origin = svc.settings.audit_origin
    with svc.sessions() as s:
        result = verify_log(s, public_key=public_key, origin=origin)
    assert result.ok, result.line()

    out = tmp_path / "bundle"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(svc.settings.instance_path),
               SIGNFLOW_KEYS=str(svc.settings.keys_path),
               SIGNFLOW_DATABASE_URL=svc.settings.database_url, SIGNFLOW_ENV="development",
               SIGNFLOW_KEYS_PASSPHRASE=EXPECTED["keys_passphrase"],
               SIGNFLOW_SECRET_KEY=EXPECTED["secret_key"])
    exported = subprocess.run([sys.executable, "-m", "signflow.cli", "audit", "export", str(out)],
                              env=env, capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    verdict = verify_bundle(out, trusted_key=verifier_key(origin, public_key))
    assert verdict.ok, verdict.line()
    entries = (out / "entries.jsonl").read_bytes().splitlines()
    assert len(entries) >= EXPECTED["counts"]["audit_entries"]


def test_every_signed_document_still_validates(svc):
    valid_until = datetime.fromisoformat(EXPECTED["valid_until"])
    assert svc.clock() < valid_until - HORIZON_MARGIN, (
        f"the release 0.1 fixture's certificates end on {valid_until:%Y-%m-%d}: regenerate it "
        "(tests/vectors/release_0_1/README.md)")
    checked = 0
    with svc.sessions() as s, s.begin():
        for label, want in EXPECTED["requests"].items():
            if not want["signed_sha256"]:
                continue
            report = _validate(svc, s, svc.blobs.get(s, want["signed_sha256"]))
            assert report.ok, (label, report.as_json())
            assert _signers(report) == want["signers"], label
            checked += 1
    assert checked == sum(1 for r in EXPECTED["requests"].values() if r["signers"])


def test_upgraded_database_takes_new_actions(svc):
    pending, delivered = EXPECTED["requests"]["pending"], EXPECTED["requests"]["delivered"]
    users = EXPECTED["users"]
    # The head of the department signs the request left pending by the old release...
    with svc.sessions() as s, s.begin():
        head = s.get(User, users["head"])
        form = prepare_signing(s, svc.deps, user=head, request_id=pending["id"], now=svc.clock())
        req = sign_request(s, svc.deps, actor=Actor.of(head), request_id=pending["id"], pin=EXPECTED["pin"],
                           activation_token=form.activation_token,
                           shown_sha256=form.document_sha256, now=svc.clock())
        assert req.state == "delivered" and req.signed_sha256
        signed = req.signed_sha256
    # ...and the destination acknowledges a document the old release delivered.
    with svc.sessions() as s, s.begin():
        ack = acknowledge_receipt(s, svc.deps, actor=Actor.of(s.get(User, users["recipient"])),
                                  request_id=delivered["id"], now=svc.clock())
        assert ack.state == "received"
    with svc.sessions() as s, s.begin():
        report = _validate(svc, s, svc.blobs.get(s, signed))
        assert report.ok, report.as_json()
        assert _signers(report) == ["Pr Øyvind Berg"]
        assert _count(s, Signature) == EXPECTED["counts"]["signatures"] + 1
    # The new entries extend the old log, which still verifies as one.
    with svc.sessions() as s:
        result = verify_log(s, public_key=svc.keys.audit_key.public_key(),
                            origin=svc.settings.audit_origin)
        assert result.ok, result.line()
        assert _count(s, AuditEntry) > EXPECTED["counts"]["audit_entries"]


# -- a backup written by release 0.1 --------------------------------------------


def test_a_release_0_1_backup_restores_into_the_current_schema(tmp_path):
    """`backup.tar` was written by release 0.1's own `signflow backup` from the fixture
    database (schema 0001, routes as text); restoring it today must keep every route."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from signflow.core.ops.restore import restore

    url = f"sqlite:///{tmp_path / 'restored.db'}"
    result = restore(FIXTURE / "backup.tar", database_url=url, keys_path=tmp_path / "keys",
                     blob_root=None)
    assert result.schema_revision == PREVIOUS_REVISION
    engine = create_engine(url)
    try:
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(SignatureRequest)) \
                == EXPECTED["counts"]["requests"]
            for name, want in EXPECTED["requests"].items():
                req = s.get(SignatureRequest, want["id"])
                assert req is not None, name
                assert (route_of(req), req.state, req.step) \
                    == (want["route"], want["state"], want["step"]), name
            audit_key = load_pem_public_key((tmp_path / "keys" / "audit.pub").read_bytes())
            assert verify_log(s, public_key=audit_key, origin=EXPECTED["audit_origin"]).ok  # type: ignore[arg-type]
    finally:
        engine.dispose()
