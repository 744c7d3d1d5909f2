"""Archive timestamps: stored B-LTA documents get a fresh document timestamp
before the TSA certificate of their newest one expires."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from signflow.core.audit.log import Actor
from signflow.core.errors import ConfigurationError
from signflow.core.ops import archive_renewal as archive
from signflow.core.pades import timestamps
from signflow.core.pades import validate as validation
from signflow.core.pki import crl as revocation
from signflow.core.pki import keystore as pki
from signflow.core.pki import tsa
from signflow.core.pki.tsa import ServiceTimeStamper
from signflow.models import AuditEntry, SignatureRequest
from signflow.services import Services
from tests.conftest import World
from tests.factories import create_request, sign_request
from tests.pdfsig import pdfsig_report

ACTOR = Actor(id=None, name="test", role="operator")


def _short_lived_tsa(svc: Services, days: int) -> ServiceTimeStamper:
    """A TSA whose certificate expires in `days`: what an old TSA looks like."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = tsa.issue_tsa_certificate(
        svc.keys, key.public_key(), now=svc.clock(), validity=timedelta(days=days)
    )
    return ServiceTimeStamper(cert, key, [svc.keys.issuing_cert], clock=svc.clock)


def _signed_request(svc: Services, world: World, tsa_days: int | None) -> int:
    """A delivered request signed (B-LTA) with a TSA certificate living `tsa_days`
    (None: the service's own TSA)."""
    rid = create_request(svc, world)
    if tsa_days is None:
        sign_request(svc, rid, world.doc)
    else:
        real = svc.deps
        svc.deps = dataclasses.replace(real, timestamper=_short_lived_tsa(svc, tsa_days))
        try:
            sign_request(svc, rid, world.doc)
        finally:
            svc.deps = real
    return rid


def _signed_bytes(svc: Services, rid: int) -> tuple[str, bytes]:
    with svc.sessions() as s:
        sha = s.get(SignatureRequest, rid).signed_sha256
        assert sha is not None
        return sha, svc.blobs.get(s, sha)


def _renew(svc: Services, days: int) -> list[int]:
    with svc.sessions() as s, s.begin():
        return archive.renew_due(s, svc.deps, now=svc.clock(), within_days=days, actor=ACTOR)


def test_renewal_adds_a_verifiable_archive_timestamp(
    svc: Services, world: World, keys_dir: Path, tmp_path: Path
) -> None:
    rid = _signed_request(svc, world, tsa_days=30)
    old_sha, old = _signed_bytes(svc, rid)
    old_horizon = timestamps.timestamp_horizon(old)
    assert old_horizon is not None and old_horizon <= svc.clock() + timedelta(days=31)

    assert _renew(svc, 180) == [rid]
    new_sha, new = _signed_bytes(svc, rid)
    assert new_sha != old_sha and new.startswith(old)  # an incremental update
    assert timestamps.document_timestamp_count(new) == timestamps.document_timestamp_count(old) + 1
    new_horizon = timestamps.timestamp_horizon(new)
    assert new_horizon is not None
    assert new_horizon == svc.keys.tsa_cert.not_valid_after_utc

    with svc.sessions() as s:
        report = validation.validate_pdf(
            new, trust_roots=[svc.keys.root_cert],
            crls=[revocation.crl(s, svc.keys, issuer=i, now=svc.clock()) for i in ("root", "issuing")],
            now=svc.clock(),
        )
        assert svc.blobs.get(s, old_sha) == old  # the old evidence is kept
        entries = s.scalars(select(AuditEntry).where(
            AuditEntry.request_id == rid, AuditEntry.action == archive.AUDIT_ACTION)).all()
    assert report.ok, report.as_json()
    assert [sig.is_timestamp for sig in report.signatures] == [False, True, True]
    assert report.signatures[0].pades_level == "B-LTA"
    assert len(entries) == 1
    assert f'"sha256_before":"{old_sha}"' in entries[0].line
    assert f'"sha256_after":"{new_sha}"' in entries[0].line

    path = tmp_path / "renewed.pdf"
    path.write_bytes(new)
    out = pdfsig_report(path, keys_dir, tmp_path)
    assert "Signature is Valid" in out and "Certificate is Trusted" in out, out

    # Idempotent: the fresh timestamp is far from expiry, a second run does nothing.
    assert _renew(svc, 180) == []
    assert _signed_bytes(svc, rid)[0] == new_sha


def test_only_due_documents_are_renewed(svc: Services, world: World) -> None:
    soon = _signed_request(svc, world, tsa_days=30)
    later = _signed_request(svc, world, tsa_days=400)
    current = _signed_request(svc, world, tsa_days=None)
    before = {rid: _signed_bytes(svc, rid)[0] for rid in (soon, later, current)}

    with svc.sessions() as s:
        due = archive.due_documents(s, svc.deps, now=svc.clock(), within_days=180)
    assert [d.request_id for d in due] == [soon]
    assert _renew(svc, 180) == [soon]
    assert _signed_bytes(svc, later)[0] == before[later]
    assert _signed_bytes(svc, current)[0] == before[current]

    # A larger window catches the other old-TSA document too.
    assert _renew(svc, 1000) == [later]
    assert _signed_bytes(svc, current)[0] == before[current]
    assert _renew(svc, 1000) == []


def test_a_tsa_expiring_within_the_window_is_refused(svc: Services, world: World) -> None:
    rid = _signed_request(svc, world, tsa_days=30)
    sha = _signed_bytes(svc, rid)[0]
    # Stamping with a TSA that itself expires within the window buys nothing.
    with pytest.raises(ConfigurationError, match="renew-tsa"):
        _renew(svc, 3650)
    assert _signed_bytes(svc, rid)[0] == sha


def test_renewed_tsa_certificate_extends_the_chain(svc: Services, world: World,
                                                     tmp_path: Path) -> None:
    keys_path = tmp_path / "keys"
    pki.init_keys(keys_path, passphrase=b"renew-tsa passphrase", now=svc.clock() - timedelta(
        days=1000), base_url="http://127.0.0.1:5000")
    aged = pki.load_keys(keys_path, passphrase=b"renew-tsa passphrase")
    renewed = tsa.renew_tsa_certificate(keys_path, aged, now=svc.clock())
    assert renewed.not_valid_after_utc > aged.tsa_cert.not_valid_after_utc
    assert renewed.public_key() == aged.tsa_cert.public_key()
    assert (keys_path / f"tsa-{aged.tsa_cert.serial_number:x}.crt").is_file()
    reloaded = pki.load_keys(keys_path, passphrase=b"renew-tsa passphrase")
    assert reloaded.tsa_cert == renewed


def test_cli_renew_lta_dry_run_then_real(svc: Services, world: World, settings) -> None:
    rid = _signed_request(svc, world, tsa_days=30)
    sha = _signed_bytes(svc, rid)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(SIGNFLOW_INSTANCE=str(settings.instance_path), SIGNFLOW_KEYS=str(settings.keys_path),
               SIGNFLOW_DATABASE_URL=settings.database_url, SIGNFLOW_ENV="testing",
               SIGNFLOW_SECRET_KEY="t" * 48, SIGNFLOW_BASE_URL=settings.base_url)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "signflow.cli", "pki", "renew-lta", *args],
                              env=env, capture_output=True, text=True, timeout=120)

    dry = run("--days", "90", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"request {rid}:" in dry.stdout and "1 document(s) due" in dry.stdout
    assert _signed_bytes(svc, rid)[0] == sha
    real = run("--days", "90")
    assert real.returncode == 0, real.stderr
    assert "1 document(s) renewed" in real.stdout
    assert _signed_bytes(svc, rid)[0] != sha
    again = run("--days", "90")
    assert again.returncode == 0 and "0 document(s) renewed" in again.stdout
    refused = run("--days", "3650")
    assert refused.returncode == 1 and "renew-tsa" in refused.stderr
    assert "Traceback" not in refused.stderr
