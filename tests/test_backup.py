"""Backup and restore: real databases (SQLite, PostgreSQL, across), real keys,
real signed documents that must still decrypt and validate afterwards."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, inspect, select

from signflow import jobs
from signflow.core.audit import checkpoints
from signflow.core.errors import Conflict, InvalidInput
from signflow.core.notify.channels import LogNotifier
from signflow.core.ops import backup as backup
from signflow.core.ops import consistency as consistency
from signflow.core.ops import restore
from signflow.core.pades import validate as validation
from signflow.models import SignatureRequest, User
from signflow.services import build_services
from tests.conftest import Clock, make_settings, reset_postgres
from tests.factories import acknowledge_receipt, create_request, sign_request
from tests.tools import run_cli


@pytest.fixture
def settings(request, tmp_path, keys_dir, database_url):
    """The shared settings, with the blob backend a test asks for (indirect param)."""
    # B-T: a real timestamped signature, without B-LTA's slower validation-data round.
    backend = getattr(request, "param", "database")
    return make_settings(tmp_path / "instance", keys_dir, database_url, pades_level="B-T",
                         blob_backend=backend)


def _populate(svc, world) -> dict[int, str]:
    received = create_request(svc, world)
    sign_request(svc, received, world.doc)
    acknowledge_receipt(svc, received, world)
    delivered = create_request(svc, world)
    sign_request(svc, delivered, world.doc)
    pending = create_request(svc, world, urgency="routine")
    jobs.run_once(svc)  # notifications and a signed checkpoint
    return {received: "received", delivered: "delivered", pending: "pending"}


def _target_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'restored.db'}"
    # Asked for only here: the SQLite targets run without a PostgreSQL server.
    url: str = request.getfixturevalue("postgres_url")
    reset_postgres(url)  # the source (if PostgreSQL) is gone: a real disaster recovery
    return url


def _backup(svc, settings, out: Path, *, private: bool, calls: list | None = None):
    return backup.backup(
        settings.database_url,
        keys_path=settings.keys_path,
        blob_root=svc.settings.instance_path / "blobs" if settings.blob_backend == "file" else None,
        out=out,
        include_private_keys=private,
        now=svc.clock(),
        progress=(lambda d, t: calls.append((d, t))) if calls is not None else None,
    )


def _assert_restored(target_settings, expected: dict[int, str], clock: Clock) -> None:
    svc = build_services(target_settings, clock=clock, notifier=LogNotifier())
    try:
        with svc.sessions() as s:
            result = checkpoints.verify_log(
                s, public_key=svc.keys.audit_key.public_key(), origin=svc.settings.audit_origin
            )
            assert result.ok, result.line()
            assert result.size > 10
            assert consistency.check(s, svc.blobs) == []
            for rid, state in expected.items():
                req = s.get(SignatureRequest, rid)
                assert req.state == state
                assert svc.blobs.get(s, req.document_sha256)
                if req.signed_sha256:
                    report = validation.validate_pdf(
                        svc.blobs.get(s, req.signed_sha256), trust_roots=[svc.keys.root_cert], now=clock()
                    )
                    assert report.ok, report.as_json()
            s.rollback()
        # Ids keep counting after the restored ones (PostgreSQL sequences reset).
        with svc.sessions() as s:
            tech = s.scalar(select(User.id).where(User.username == "tech"))
        world = SimpleNamespace(tech=tech, group=_group_id(svc), destination=_destination_id(svc))
        new_id = create_request(svc, world)
        assert new_id > max(expected)
    finally:
        svc.engine.dispose()


def _group_id(svc) -> int:
    from signflow.models import OnCallGroup

    with svc.sessions() as s:
        return s.scalar(select(OnCallGroup.id).where(OnCallGroup.name == "Anaesthesia on call"))


def _destination_id(svc) -> int:
    from signflow.models import Destination

    with svc.sessions() as s:
        return s.scalar(select(Destination.id).where(Destination.name == "Transplant service"))


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_backup_then_restore_into_empty_instance(svc, world, settings, clock, tmp_path, target, request):
    expected = _populate(svc, world)
    calls: list[tuple[int, int]] = []
    out = tmp_path / "site.tar"
    result = _backup(svc, settings, out, private=True, calls=calls)
    svc.engine.dispose()
    assert out.is_file() and not list(tmp_path.glob(".site.tar*"))
    assert result.schema_revision and result.rows > 0
    assert calls[0] == (0, calls[-1][1]) and calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {
        "manifest.json",
        "db/requests.jsonl",
        "db/audit_entries.jsonl",
        "keys/root.crt",
        "keys/audit.pub",
        "keys/root.key",
        "keys/storage-master.key",
    } <= names

    target_url = _target_url(target, tmp_path, request)
    target_settings = make_settings(tmp_path / "restored", tmp_path / "restored-keys", target_url)
    restored = restore.restore(
        out, database_url=target_url, keys_path=target_settings.keys_path, blob_root=None
    )
    assert restored.rows == result.rows
    assert "storage-master.key" in restored.key_files
    _assert_restored(target_settings, expected, clock)

    # A second restore over the now populated instance is refused.
    with pytest.raises(Conflict, match="not empty"):
        restore.restore(out, database_url=target_url, keys_path=target_settings.keys_path, blob_root=None)


def test_public_only_backup_and_refusals(svc, world, settings, clock, tmp_path, keys_dir):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("refusals are checked before any database work; SQLite is enough")
    expected = _populate(svc, world)
    out = tmp_path / "public.tar"
    _backup(svc, settings, out, private=False)
    with tarfile.open(out) as tar:
        keys = {n for n in tar.getnames() if n.startswith("keys/")}
    assert "keys/root.crt" in keys and "keys/pki.json" in keys
    assert not any(n.endswith(".key") for n in keys)  # no private key, no sealed secret
    with pytest.raises(Conflict, match="already exists"):
        _backup(svc, settings, out, private=False)

    target_url = f"sqlite:///{tmp_path / 'restored.db'}"
    target_keys = tmp_path / "restored-keys"

    # A corrupted backup is refused before anything is written.
    corrupted = tmp_path / "corrupted.tar"
    data = bytearray(out.read_bytes())
    index = data.index(b'"state":"received"')
    data[index + 9] ^= 0x01
    corrupted.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="corrupted"):
        restore.restore(corrupted, database_url=target_url, keys_path=target_keys, blob_root=None)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(out.read_bytes()[: len(data) // 2])
    with pytest.raises(InvalidInput):
        restore.restore(truncated, database_url=target_url, keys_path=target_keys, blob_root=None)
    assert not target_keys.exists() or not any(target_keys.iterdir())
    engine = create_engine(target_url)
    assert inspect(engine).get_table_names() == []
    engine.dispose()

    # The operator put a different key file in place: refused, nothing written.
    target_keys.mkdir()
    (target_keys / "root.crt").write_text("not our root")
    with pytest.raises(Conflict, match="root.crt"):
        restore.restore(out, database_url=target_url, keys_path=target_keys, blob_root=None)
    assert sorted(p.name for p in target_keys.iterdir()) == ["root.crt"]

    # The private keys kept apart (same files): the public backup completes them.
    shutil.rmtree(target_keys)
    shutil.copytree(keys_dir, target_keys)
    restore.restore(out, database_url=target_url, keys_path=target_keys, blob_root=None)
    _assert_restored(make_settings(tmp_path / "restored", target_keys, target_url), expected, clock)


@pytest.mark.parametrize("settings", ["file"], indirect=True)
def test_file_blob_backend_round_trip(svc, world, settings, clock, tmp_path):
    expected = _populate(svc, world)
    blob_root = settings.instance_path / "blobs"
    (blob_root / "00").mkdir(exist_ok=True)
    (blob_root / "00" / "orphan.0011").write_bytes(b"never referenced")
    out = tmp_path / "files.tar"
    result = _backup(svc, settings, out, private=True)
    svc.engine.dispose()
    stored = sorted(
        p.relative_to(blob_root).as_posix()
        for p in blob_root.rglob("*")
        if p.is_file() and not p.name.startswith("orphan")
    )
    assert result.blob_files == len(stored) >= 3  # documents can share a blob
    with tarfile.open(out) as tar:
        assert (
            sorted(n.removeprefix("blobs/") for n in tar.getnames() if n.startswith("blobs/")) == stored
        )  # the orphan stays behind

    # Into a file-backend instance: the same ciphertext files.
    url = f"sqlite:///{tmp_path / 'to-files.db'}"
    to_files = make_settings(tmp_path / "to-files", tmp_path / "keys-a", url, blob_backend="file")
    restore.restore(
        out, database_url=url, keys_path=to_files.keys_path, blob_root=to_files.instance_path / "blobs"
    )
    _assert_restored(to_files, expected, clock)
    # Into a database-backend instance: the ciphertext moves into the rows.
    url = f"sqlite:///{tmp_path / 'to-db.db'}"
    to_db = make_settings(tmp_path / "to-db", tmp_path / "keys-b", url)
    restore.restore(out, database_url=url, keys_path=to_db.keys_path, blob_root=None)
    _assert_restored(to_db, expected, clock)


def test_cli_backup_and_restore(svc, world, settings, tmp_path, clock):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the CLI path is the same on PostgreSQL; core is tested on both")
    expected = _populate(svc, world)
    svc.engine.dispose()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    source = dict(
        base,
        SIGNFLOW_INSTANCE=str(settings.instance_path),
        SIGNFLOW_KEYS=str(settings.keys_path),
        SIGNFLOW_DATABASE_URL=settings.database_url,
        SIGNFLOW_ENV="development",
        SIGNFLOW_SECRET_KEY="s" * 48,
    )
    out = tmp_path / "cli.tar"
    made = run_cli(["backup", str(out), "--include-private-keys"], source)
    assert made.returncode == 0, made.stderr
    assert "with private keys" in made.stdout and out.is_file()
    again = run_cli(["backup", str(out)], source)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr

    target_url = f"sqlite:///{tmp_path / 'cli-restored.db'}"
    target = dict(
        source,
        SIGNFLOW_INSTANCE=str(tmp_path / "cli-restored"),
        SIGNFLOW_KEYS=str(tmp_path / "cli-keys"),
        SIGNFLOW_DATABASE_URL=target_url,
        SIGNFLOW_KEYS_PASSPHRASE=(settings.instance_path / "keys_passphrase").read_text(),
    )
    restored = run_cli(["restore", str(out)], target)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored" in restored.stdout and "OK" in restored.stdout.upper()
    refused = run_cli(["restore", str(out)], target)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    checked = run_cli(["check"], target)
    assert checked.returncode == 0, checked.stdout
    target_settings = make_settings(tmp_path / "cli-restored", tmp_path / "cli-keys", target_url)
    _assert_restored(target_settings, expected, clock)
