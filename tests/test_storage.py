"""Encrypted blob store: both backends, tampering, wrong keys, no plaintext at rest."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from signflow.core.errors import ConfigurationError, NotFound, StorageCorrupted
from signflow.core.storage import (
    BlobStore,
    DatabaseBlobStore,
    FileBlobStore,
    decrypt_secret,
    encrypt_secret,
    make_blob_store,
    sha256_hex,
)
from signflow.db import Base, make_engine, make_session_factory
from signflow.models import Blob
from tests.hostile import simple

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MASTER = bytes(range(32))


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'signflow.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    with make_session_factory(engine)() as session:
        yield session


@pytest.fixture(params=["database", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return make_blob_store(request.param, MASTER, tmp_path / "blobs")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_roundtrip_and_address(store: BlobStore, session: Session) -> None:
    data = os.urandom(5000)
    address = store.put(session, data, now=NOW)
    session.commit()
    assert address == sha256_hex(data)
    assert store.exists(session, address)
    assert store.get(session, address) == data
    row = session.get(Blob, address)
    assert row is not None and row.size == 5000 and row.created_at == NOW
    if isinstance(store, FileBlobStore):
        assert row.ciphertext is None
    else:
        assert row.ciphertext is not None and data not in row.ciphertext


def test_same_content_twice_is_one_blob(store: BlobStore, session: Session, tmp_path: Path) -> None:
    data = b"%PDF-1.7 same content"
    first = store.put(session, data, now=NOW)
    session.commit()
    second = store.put(session, data, now=NOW)
    session.commit()
    assert first == second
    assert session.scalar(select(func.count()).select_from(Blob)) == 1
    expected_files = 1 if isinstance(store, FileBlobStore) else 0
    assert len(_files(tmp_path / "blobs")) == expected_files


def test_unknown_and_malformed_addresses(store: BlobStore, session: Session) -> None:
    with pytest.raises(NotFound):
        store.get(session, "0" * 64)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63, ""):
        assert not store.exists(session, bad)
        with pytest.raises(NotFound):
            store.get(session, bad)


def _flip_stored_byte(store: BlobStore, session: Session, address: str) -> None:
    row = session.get(Blob, address)
    assert row is not None
    if isinstance(store, FileBlobStore):
        path = store.path_for(address, row.nonce)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    else:
        assert row.ciphertext is not None
        raw = bytearray(row.ciphertext)
        raw[len(raw) // 2] ^= 0x01
        session.execute(update(Blob).where(Blob.sha256 == address).values(ciphertext=bytes(raw)))
        session.commit()
        session.expire_all()


def test_flipped_ciphertext_byte_is_never_served(store: BlobStore, session: Session) -> None:
    address = store.put(session, b"dose: 5 mg" * 100, now=NOW)
    session.commit()
    _flip_stored_byte(store, session, address)
    with pytest.raises(StorageCorrupted):
        store.get(session, address)


@pytest.mark.parametrize("column", ["wrapped_key", "nonce"])
def test_tampered_envelope_fields(store: BlobStore, session: Session, column: str) -> None:
    address = store.put(session, b"envelope" * 50, now=NOW)
    session.commit()
    row = session.get(Blob, address)
    assert row is not None
    raw = bytearray(getattr(row, column))
    raw[0] ^= 0x80
    if isinstance(store, FileBlobStore) and column == "nonce":
        # The nonce also names the file: keep the file reachable so the tag is what fails.
        old = store.path_for(address, row.nonce)
        old.rename(store.path_for(address, bytes(raw)))
    session.execute(update(Blob).where(Blob.sha256 == address).values({column: bytes(raw)}))
    session.commit()
    session.expire_all()
    with pytest.raises(StorageCorrupted):
        store.get(session, address)


def test_ciphertext_moved_under_another_address_fails(store: BlobStore, session: Session) -> None:
    """The AAD binds each ciphertext to its address: swapping whole envelopes fails."""
    a = store.put(session, b"patient A" * 40, now=NOW)
    b = store.put(session, b"patient B" * 40, now=NOW)
    session.commit()
    row_a, row_b = session.get(Blob, a), session.get(Blob, b)
    assert row_a is not None and row_b is not None
    if isinstance(store, FileBlobStore):
        store.path_for(a, row_a.nonce).unlink()
        os.link(store.path_for(b, row_b.nonce), store.path_for(a, row_b.nonce))
    session.execute(
        update(Blob)
        .where(Blob.sha256 == a)
        .values(
            wrapped_key=row_b.wrapped_key,
            nonce=row_b.nonce,
            ciphertext=row_b.ciphertext,
            size=row_b.size,
        )
    )
    session.commit()
    session.expire_all()
    with pytest.raises(StorageCorrupted):
        store.get(session, a)
    assert store.get(session, b) == b"patient B" * 40


def test_wrong_master_key(session: Session, tmp_path: Path) -> None:
    for kind in ("database", "file"):
        data = f"{kind} secret".encode()
        address = make_blob_store(kind, MASTER, tmp_path / "blobs").put(session, data, now=NOW)
        session.commit()
        other = make_blob_store(kind, bytes(32), tmp_path / "blobs")
        with pytest.raises(StorageCorrupted):
            other.get(session, address)


def test_missing_file_is_corruption_and_put_heals_it(session: Session, tmp_path: Path) -> None:
    store = FileBlobStore(MASTER, tmp_path / "blobs")
    address = store.put(session, b"will lose my file", now=NOW)
    session.commit()
    for path in _files(tmp_path / "blobs"):
        path.unlink()
    assert not store.exists(session, address)
    with pytest.raises(StorageCorrupted):
        store.get(session, address)
    store.put(session, b"will lose my file", now=NOW)
    session.commit()
    assert store.get(session, address) == b"will lose my file"


def test_delete(store: BlobStore, session: Session, tmp_path: Path) -> None:
    address = store.put(session, b"to be purged", now=NOW)
    session.commit()
    store.delete(session, address)
    session.rollback()
    # A rolled-back purge leaves everything readable.
    assert store.get(session, address) == b"to be purged"
    store.delete(session, address)
    if isinstance(store, FileBlobStore):
        assert len(_files(tmp_path / "blobs")) == 1  # not before the commit
    session.commit()
    assert not store.exists(session, address)
    with pytest.raises(NotFound):
        store.get(session, address)
    assert _files(tmp_path / "blobs") == []
    store.delete(session, address)  # idempotent


def _checkpoint(db_file: Path) -> None:
    # A plain connection: the app engine wraps everything in BEGIN IMMEDIATE,
    # inside which SQLite refuses to checkpoint.
    conn = sqlite3.connect(db_file, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()


def test_no_plaintext_at_rest(store: BlobStore, session: Session, tmp_path: Path) -> None:
    marker = "PLAINTEXT-CANARY-" + secrets.token_hex(8)
    document = simple(text=marker)
    assert marker.encode() in document  # uncompressed content stream
    store.put(session, document, now=NOW)
    session.commit()
    db_file = tmp_path / "signflow.db"
    wal = tmp_path / "signflow.db-wal"
    paths = [db_file, wal, *_files(tmp_path / "blobs")]
    needles = (marker.encode(), document[64:128])
    for path in paths:
        if path.exists():
            raw = path.read_bytes()
            assert all(needle not in raw for needle in needles), path
    _checkpoint(db_file)
    raw = db_file.read_bytes()
    assert all(needle not in raw for needle in needles)
    # ...and the check is able to see plaintext when it is there.
    session.execute(text("INSERT INTO settings (name, value) VALUES ('probe', :v)"), {"v": marker})
    session.commit()
    _checkpoint(db_file)
    assert marker.encode() in db_file.read_bytes()


def test_files_are_private(session: Session, tmp_path: Path) -> None:
    store = FileBlobStore(MASTER, tmp_path / "blobs")
    store.put(session, b"private", now=NOW)
    (path,) = _files(tmp_path / "blobs")
    assert path.stat().st_mode & 0o077 == 0
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_secret_helpers() -> None:
    sealed = encrypt_secret(MASTER, b"JBSWY3DPEHPK3PXP", purpose="totp:7")
    assert b"JBSWY3DPEHPK3PXP" not in sealed
    assert sealed != encrypt_secret(MASTER, b"JBSWY3DPEHPK3PXP", purpose="totp:7")
    assert decrypt_secret(MASTER, sealed, purpose="totp:7") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(StorageCorrupted):
        decrypt_secret(MASTER, sealed, purpose="totp:8")
    with pytest.raises(StorageCorrupted):
        decrypt_secret(bytes(32), sealed, purpose="totp:7")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(StorageCorrupted):
        decrypt_secret(MASTER, bytes(tampered), purpose="totp:7")
    with pytest.raises(StorageCorrupted):
        decrypt_secret(MASTER, b"short", purpose="totp:7")


def test_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        DatabaseBlobStore(b"too short")
    with pytest.raises(ConfigurationError):
        make_blob_store("file", MASTER, None)
    with pytest.raises(ConfigurationError):
        make_blob_store("s3", MASTER, tmp_path)
    assert isinstance(make_blob_store("database", MASTER, None), DatabaseBlobStore)
