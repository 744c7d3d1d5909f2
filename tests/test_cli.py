"""The `signflow` command, run as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from signflow.models import AuditVerification
from tests.conftest import PASSPHRASE
from tests.factories import create_request, sign_request
from tests.tools import run_cli


def _env(instance: Path, keys: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(instance), SIGNFLOW_KEYS=str(keys), SIGNFLOW_ENV="development")
    if database_url:
        env["SIGNFLOW_DATABASE_URL"] = database_url
    return env


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_init_is_idempotent_and_fails_closed(tmp_path):
    env = _env(tmp_path / "instance", tmp_path / "keys")
    first = run_cli(["init"], env)
    assert first.returncode == 0, first.stderr
    keys = _digests(tmp_path / "keys")
    secret = (tmp_path / "instance" / "secret_key").read_text()
    assert oct((tmp_path / "instance" / "secret_key").stat().st_mode)[-3:] == "600"
    second = run_cli(["init"], env)
    assert second.returncode == 0, second.stderr
    assert _digests(tmp_path / "keys") == keys
    assert (tmp_path / "instance" / "secret_key").read_text() == secret
    import sqlite3

    with sqlite3.connect(tmp_path / "instance" / "signflow.db") as db:
        events = db.execute("SELECT line FROM audit_entries WHERE action = 'keys.created'").fetchall()
    assert len(events) == 1 and '"tsa":' in events[0][0]  # audited once, on creation only

    # Production with no secret key anywhere refuses to serve, in one line.
    bare = _env(tmp_path / "empty", tmp_path / "keys")
    bare["SIGNFLOW_ENV"] = "production"
    refused = run_cli(["serve", "--port", "1"], bare)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "secret key" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_create_user_from_the_command_line(tmp_path):
    env = _env(tmp_path / "instance", tmp_path / "keys")
    assert run_cli(["init"], env).returncode == 0
    env_pw = dict(env, SIGNFLOW_NEW_PASSWORD="a sturdy passphrase")
    made = run_cli(["create-user", "desk", "--role", "recipient", "--destination", "Transplant service"],
               env_pw)
    assert made.returncode == 0, made.stderr
    assert "a sturdy passphrase" not in made.stdout + made.stderr
    weak = run_cli(["create-user", "weak", "--role", "technician"], dict(env, SIGNFLOW_NEW_PASSWORD="123"))
    assert weak.returncode == 1 and "at least 8" in weak.stderr
    duplicate = run_cli(["create-user", "desk", "--role", "technician"], env_pw)
    assert duplicate.returncode == 1 and "taken" in duplicate.stderr
    # Professional ids are validated on the operator's path too; that path needs no
    # second administrator (break glass, audited as the operator).
    bad = run_cli(["create-user", "dr.x", "--role", "physician", "--professional-id", "10001234567"],
                  env_pw)
    assert bad.returncode == 1 and "check key" in bad.stderr and bad.stderr.count("\n") == 1
    doc = run_cli(["create-user", "dr.x", "--role", "physician", "--professional-id", "10001234565",
                   "--email", "x@hospital.example"], env_pw)
    assert doc.returncode == 0, doc.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "instance" / "signflow.db") as db:
        row = db.execute("SELECT active, must_change_password FROM users WHERE username = 'dr.x'").fetchone()
        actor = db.execute("SELECT line FROM audit_entries WHERE action = 'user.created' "
                           "ORDER BY seq DESC").fetchone()[0]
    assert tuple(row) == (1, 0) and '"role":"operator"' in actor


def test_api_tokens_for_integration_accounts_only(tmp_path):
    env = _env(tmp_path / "instance", tmp_path / "keys")
    assert run_cli(["init"], env).returncode == 0
    made = run_cli(["create-user", "desk", "--role", "recipient", "--destination", "Transplant service"],
                   dict(env, SIGNFLOW_NEW_PASSWORD="a sturdy passphrase"))
    assert made.returncode == 0, made.stderr
    # People get no tokens; an integration account (no password asked) does.
    person = run_cli(["api-token", "create", "desk", "--scope", "read"], env)
    assert person.returncode == 1 and "integration accounts" in person.stderr
    his = run_cli(["create-user", "his", "--role", "integration", "--destination", "Transplant service"],
                  env)
    assert his.returncode == 0, his.stderr
    token = run_cli(["api-token", "create", "his", "--name", "transplant HIS", "--scope", "read",
                     "--scope", "download", "--scope", "acknowledge", "--days", "30"], env)
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip().splitlines()[-1]
    assert secret.startswith("sfat_") and len(secret) > 40
    assert "acknowledge download read" in token.stdout
    token_id = token.stdout.split()[2]
    wrong = run_cli(["api-token", "create", "his", "--scope", "submit"], env)
    assert wrong.returncode == 1 and "submit" in wrong.stderr
    listed = run_cli(["api-token", "list"], env)
    assert listed.returncode == 0 and "transplant HIS" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.stdout
    assert run_cli(["api-token", "revoke", token_id], env).returncode == 0
    assert "revoked" in run_cli(["api-token", "list", "his"], env).stdout
    unknown = run_cli(["api-token", "create", "nobody", "--scope", "read"], env)
    assert unknown.returncode == 2 and "no user named" in unknown.stderr
    no_group = run_cli(["create-user", "lab", "--role", "integration", "--group", "Nowhere"], env)
    assert no_group.returncode == 2 and "no on-call group" in no_group.stderr


def test_verify_signed_tampered_unsigned_and_not_a_pdf(svc, world, settings, tmp_path):
    rid = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    with svc.sessions() as s:
        from signflow.models import SignatureRequest

        signed = svc.blobs.get(s, s.get(SignatureRequest, rid).signed_sha256)
    env = _env(settings.instance_path, settings.keys_path, settings.database_url)
    env["SIGNFLOW_KEYS_PASSPHRASE"] = PASSPHRASE
    good = tmp_path / "good.pdf"
    good.write_bytes(signed)

    ok = run_cli(["verify", str(good)], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Dr Hélène Lefèvre" in ok.stdout and "valid" in ok.stdout

    as_json = run_cli(["verify", str(good), "--json"], env)
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    assert any("Lefèvre" in (sig.get("signer") or "") for sig in report["signatures"])

    bad = tmp_path / "bad.pdf"
    data = bytearray(signed)
    data[200] ^= 0x01
    bad.write_bytes(bytes(data))
    assert run_cli(["verify", str(bad)], env).returncode == 1

    from tests.pdfs import make_pdf

    unsigned = tmp_path / "unsigned.pdf"
    unsigned.write_bytes(make_pdf())
    result = run_cli(["verify", str(unsigned)], env)
    assert result.returncode != 0 and result.stderr.strip().count("\n") == 0
    assert "no signature" in result.stderr

    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"MZ\x90\x00 this is not a PDF")
    result = run_cli(["verify", str(junk)], env)
    assert result.returncode != 0 and result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr

    missing = run_cli(["verify", str(tmp_path / "nope.pdf")], env)
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_once_and_audit_commands(svc, world, settings, clock, tmp_path):
    # The worker runs on the wall clock: the request is made now, not at the session's T0,
    # or a long suite would see its first deadline pass and count an escalation too.
    clock.now = datetime.now(UTC).replace(microsecond=0)
    create_request(svc, world)
    env = _env(settings.instance_path, settings.keys_path, settings.database_url)
    env["SIGNFLOW_KEYS_PASSPHRASE"] = PASSPHRASE
    worker = run_cli(["worker", "--once"], env)
    assert worker.returncode == 0, worker.stderr
    assert "notified=1" in worker.stdout

    live = run_cli(["audit", "verify"], env)
    assert live.returncode == 0, live.stderr
    out = tmp_path / "bundle"
    exported = run_cli(["audit", "export", str(out)], env)
    assert exported.returncode == 0, exported.stderr
    assert (out / "entries.jsonl").is_file() and (out / "audit-key.pub").is_file()
    # The live pass was recorded: the incremental one walks only what the export added.
    incremental = run_cli(["audit", "verify", "--incremental"], env)
    assert incremental.returncode == 0, incremental.stderr
    assert incremental.stdout.startswith("OK: ")
    with svc.sessions() as s:
        passes = s.execute(select(AuditVerification.full).order_by(AuditVerification.id)).all()
    assert [p for (p,) in passes] == [True, False]
    # Offline: no database, no instance, only the bundle (and the service's public key).
    bare = {"PATH": os.environ.get("PATH", ""), "SIGNFLOW_KEYS": str(settings.keys_path)}
    offline = run_cli(["audit", "verify", str(out)], bare, cwd=tmp_path)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert offline.stdout.startswith("OK")

    lines = (out / "entries.jsonl").read_bytes().splitlines(keepends=True)
    (out / "entries.jsonl").write_bytes(b"".join(lines[:1] + lines[2:]))
    tampered = run_cli(["audit", "verify", str(out)], bare, cwd=tmp_path)
    assert tampered.returncode == 1 and "FAILED" in tampered.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_verify_refuses_a_pdf_signed_by_an_outsider(settings, tmp_path):
    from tests.hostile import sign as outsider_sign
    from tests.pdfs import make_pdf

    path = tmp_path / "outsider.pdf"
    path.write_bytes(outsider_sign(make_pdf()))
    env = _env(settings.instance_path, settings.keys_path, settings.database_url)
    env["SIGNFLOW_KEYS_PASSPHRASE"] = PASSPHRASE
    result = run_cli(["verify", str(path)], env)
    assert result.returncode == 1
    assert "NOT TRUSTED" in result.stdout and "NOT VALID" in result.stdout
    as_json = json.loads(run_cli(["verify", str(path), "--json"], env).stdout)
    assert as_json["ok"] is False and as_json["signatures"][0]["trusted"] is False
