"""Retention purge: contents go, requests, hashes and audit entries stay."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from signflow.core.audit import checkpoints
from signflow.core.audit.log import Actor
from signflow.core.errors import NotFound
from signflow.core.ops import consistency as consistency
from signflow.core.ops import retention as retention
from signflow.core.pdf import normalise as pdfcheck
from signflow.core.requests import access
from signflow.core.requests import workflow as workflow
from signflow.core.storage import FileBlobStore
from signflow.models import AuditEntry, Blob, RequestState, SignatureRequest, User
from tests.conftest import TEST_ACTOR, login, make_settings
from tests.factories import acknowledge_receipt, create_request, create_request_from, sign_request
from tests.pdfs import make_pdf
from tests.tools import run_cli


@pytest.fixture
def settings(request, tmp_path, keys_dir, database_url):
    """The shared settings, with the blob backend a test asks for (indirect param)."""
    return make_settings(
        tmp_path / "instance", keys_dir, database_url, blob_backend=getattr(request, "param", "database")
    )


def _cancel(svc, rid, world):
    with svc.sessions() as s, s.begin():
        workflow.cancel_request(
            s, svc.deps, actor=Actor.of(s.get(User, world.tech)), request_id=rid, now=svc.clock())


def _purge(svc, *, days=30, dry_run=False):
    with svc.sessions() as s, s.begin():
        return retention.purge(
            s,
            svc.deps,
            now=svc.clock(),
            retention_days=days,
            actor=TEST_ACTOR,
            dry_run=dry_run,
            previews=svc.previews,
        )


def _row(svc, rid):
    with svc.sessions() as s:
        return s.get(SignatureRequest, rid)


def test_purge_past_retention_only(svc, world, clock, app):
    received = create_request(svc, world)
    sign_request(svc, received, world.doc)
    acknowledge_receipt(svc, received, world)
    upload = pdfcheck.normalise_upload(make_pdf(1, "Shared"), max_bytes=10**7, max_pages=5)
    cancelled = create_request_from(svc, world, upload)
    _cancel(svc, cancelled, world)
    old = {rid: _row(svc, rid) for rid in (received, cancelled)}
    # A preview rendered before the purge must not survive it.
    with svc.sessions() as s:
        signed_pdf = svc.blobs.get(s, old[received].signed_sha256)
    svc.previews.get_or_render(lambda: signed_pdf, old[received].signed_sha256, 0, 200)
    preview_folder = svc.previews._folder(old[received].signed_sha256)
    assert any(preview_folder.iterdir())

    clock.advance(days=20)
    pending = create_request_from(svc, world, upload)  # the same bytes: one shared blob
    recent = create_request(svc, world)
    _cancel(svc, recent, world)
    clock.advance(days=15)

    assert _purge(svc, dry_run=True) == [received, cancelled]
    assert _row(svc, received).purged_at is None  # a dry run changes nothing

    assert _purge(svc) == [received, cancelled]
    for rid in (received, cancelled):
        row = _row(svc, rid)
        assert row.purged_at == clock() and row.state == old[rid].state
        assert (row.document_sha256, row.signed_sha256) == (old[rid].document_sha256, old[rid].signed_sha256)
    assert _row(svc, pending).purged_at is None and _row(svc, recent).purged_at is None
    pending_sha = _row(svc, pending).document_sha256
    with svc.sessions() as s:
        assert not svc.blobs.exists(s, old[received].signed_sha256)
        # Still needed by the pending request (identical upload): kept.
        assert svc.blobs.exists(s, old[cancelled].document_sha256)
        assert svc.blobs.get(s, pending_sha)
        entries = {
            e.request_id: json.loads(e.line)
            for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "document.purged"))
        }
        assert set(entries) == {received, cancelled}
        assert old[received].signed_sha256 in entries[received]["removed_sha256"]
        assert entries[cancelled]["kept_sha256"] == [old[cancelled].document_sha256]
        # Earlier entries stay and the log still verifies.
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.request_id == received)).all()
        assert {"request.created", "request.signed", "request.received"} <= set(actions)
        assert checkpoints.verify_log(
            s, public_key=svc.keys.audit_key.public_key(), origin=svc.settings.audit_origin
        ).ok
        assert consistency.check(s, svc.blobs) == []
    assert not preview_folder.exists()

    # Idempotent: nothing more to do, no new entry.
    with svc.sessions() as s:
        size = len(s.scalars(select(AuditEntry.seq)).all())
    assert _purge(svc) == []
    with svc.sessions() as s:
        assert len(s.scalars(select(AuditEntry.seq)).all()) == size

    # The recipient asks for the purged file: a clear 404, from core and over HTTP.
    with svc.sessions() as s, pytest.raises(NotFound, match="retention period"):
        access.document_for(
            s, svc.deps, actor=Actor.of(s.get(User, world.recipient)), request_id=received, now=clock())
    client = app.test_client()
    login(client, "recipient")
    resp = client.get(f"/documents/{received}/download")
    assert resp.status_code == 404
    assert "removed after its retention period" in resp.get_data(as_text=True)


def test_pending_and_signed_in_flight_never_purged(svc, world, clock):
    pending = create_request(svc, world)
    delivered = create_request(svc, world)
    sign_request(svc, delivered, world.doc)
    clock.advance(days=400)
    assert _purge(svc, days=30) == []
    assert _row(svc, pending).state == RequestState.PENDING
    with svc.sessions() as s:
        assert svc.blobs.get(s, _row(svc, delivered).signed_sha256)


@pytest.mark.parametrize("settings", ["file"], indirect=True)
def test_file_blobs_really_deleted(svc, world, clock):
    assert isinstance(svc.blobs, FileBlobStore)
    rid = create_request(svc, world)
    sign_request(svc, rid, world.doc)
    acknowledge_receipt(svc, rid, world)
    with svc.sessions() as s:
        req = s.get(SignatureRequest, rid)
        rows = [s.get(Blob, sha) for sha in (req.document_sha256, req.signed_sha256)]
        paths = [svc.blobs.path_for(r.sha256, r.nonce) for r in rows]
    assert all(p.is_file() for p in paths)
    clock.advance(days=31)
    assert _purge(svc) == [rid]
    assert not any(p.exists() for p in paths)
    with svc.sessions() as s:
        assert all(s.get(Blob, r.sha256) is None for r in rows)
        assert consistency.check(s, svc.blobs) == []


def test_purge_cli(svc, world, clock, settings):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the CLI path is the same on PostgreSQL; core is tested on both")
    rid = create_request(svc, world)
    _cancel(svc, rid, world)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNFLOW_")}
    env.update(
        SIGNFLOW_INSTANCE=str(settings.instance_path),
        SIGNFLOW_KEYS=str(settings.keys_path),
        SIGNFLOW_DATABASE_URL=settings.database_url,
        SIGNFLOW_ENV="development",
        SIGNFLOW_SECRET_KEY="s" * 48,
        SIGNFLOW_RETENTION_DAYS="1",
    )
    dry = run_cli(["purge", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "would purge 0 request(s)" in dry.stdout  # closed just now: not yet due
    with svc.sessions() as s, s.begin():
        s.get(SignatureRequest, rid).updated_at = datetime.now(UTC) - timedelta(days=2)
    done = run_cli(["purge"], env)
    assert done.returncode == 0, done.stderr
    assert f"purged 1 request(s) older than 1 days: #{rid}" in done.stdout
    assert _row(svc, rid).purged_at is not None
    checked = run_cli(["check"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "consistent" in checked.stdout
