"""Encrypted, content-addressed blob store for documents.

Envelope encryption: every blob gets its own random 256-bit data key and is
sealed with AES-256-GCM; the data key is wrapped (RFC 3394 AES key wrap) under
a key-encryption key derived from the storage master key. The GCM associated
data carries the blob's SHA-256 address, so a ciphertext moved under another
address fails its tag, and `get` also re-hashes the plaintext: bad bytes are
never returned.

Two backends share the format. `DatabaseBlobStore` keeps the ciphertext in
the `blobs` row, so it commits atomically with the request that stores it.
`FileBlobStore` keeps only the wrapped key and nonce in the row and the
ciphertext in a file written before the row is flushed (temp file, fsync,
rename, fsync of the folder): a crash leaves at worst an unreferenced file,
never a row pointing at nothing. Deleting a file waits for the commit for the
same reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from signflow.core.errors import ConfigurationError, NotFound, StorageCorrupted
from signflow.core.i18n import N_
from signflow.models import Blob

MASTER_KEY_BYTES = 32
_NONCE_BYTES = 12
_SECRET_VERSION = b"\x01"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PENDING_UNLINKS = "signflow.storage.pending_unlinks"


def generate_master_key() -> bytes:
    return os.urandom(MASTER_KEY_BYTES)


def _check_master_key(master_key: bytes) -> None:
    if not isinstance(master_key, bytes) or len(master_key) != MASTER_KEY_BYTES:
        raise ConfigurationError(N_("the storage master key must be 32 bytes"))


def derive_key(master_key: bytes, label: str) -> bytes:
    """One independent subkey per use, so no two features ever share a raw key."""
    _check_master_key(master_key)
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"signflow/v1/" + label.encode()
    ).derive(master_key)


def encrypt_secret(master_key: bytes, plaintext: bytes, *, purpose: str) -> bytes:
    """Seal a small secret (TOTP seed, cached preview...); `purpose` is bound as AAD,
    so a value stored for one purpose cannot be replayed as another."""
    key = derive_key(master_key, "secret")
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, purpose.encode())
    return _SECRET_VERSION + nonce + sealed


def decrypt_secret(master_key: bytes, token: bytes, *, purpose: str) -> bytes:
    key = derive_key(master_key, "secret")
    if len(token) < 1 + _NONCE_BYTES + 16 or token[:1] != _SECRET_VERSION:
        raise StorageCorrupted(N_("stored secret is malformed"))
    nonce, sealed = token[1 : 1 + _NONCE_BYTES], token[1 + _NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, sealed, purpose.encode())
    except InvalidTag:
        raise StorageCorrupted(N_("stored secret failed its integrity check")) from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_address(sha256: str) -> bool:
    return isinstance(sha256, str) and _SHA256_HEX.fullmatch(sha256) is not None


def _check_address(sha256: str) -> None:
    # The address ends up in a file path: only exact lowercase hex ever gets there.
    if not _is_address(sha256):
        raise NotFound(N_("document not found"))


def _aad(sha256: str) -> bytes:
    return b"signflow-blob-v1:" + sha256.encode()


class BlobStore(Protocol):
    def put(self, session: Session, data: bytes, *, now: datetime) -> str: ...

    def get(self, session: Session, sha256: str) -> bytes: ...

    def delete(self, session: Session, sha256: str) -> None: ...

    def exists(self, session: Session, sha256: str) -> bool: ...


class _EnvelopeStore:
    """Shared sealing logic; subclasses decide where the ciphertext lives."""

    def __init__(self, master_key: bytes) -> None:
        self._kek = derive_key(master_key, "blob-kek")

    def _seal(self, sha256: str, data: bytes) -> tuple[bytes, bytes, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, data, _aad(sha256))
        return aes_key_wrap(self._kek, data_key), nonce, ciphertext

    def _open(self, row: Blob, ciphertext: bytes) -> bytes:
        try:
            data_key = aes_key_unwrap(self._kek, row.wrapped_key)
            data = AESGCM(data_key).decrypt(row.nonce, ciphertext, _aad(row.sha256))
        except (InvalidUnwrap, InvalidTag, ValueError):
            raise StorageCorrupted(N_("stored document failed its integrity check")) from None
        # The tag proves the bytes are the ones sealed under this address; the
        # hash proves the address was right in the first place.
        if len(data) != row.size or not hmac.compare_digest(sha256_hex(data), row.sha256):
            raise StorageCorrupted(N_("stored document failed its integrity check"))
        return data

    def _row(self, session: Session, sha256: str) -> Blob | None:
        _check_address(sha256)
        return session.get(Blob, sha256)

    def _stored(self, session: Session, sha256: str) -> Blob:
        row = self._row(session, sha256)
        if row is None:
            raise NotFound(N_("document not found"))
        return row

    def _insert(self, session: Session, sha256: str, size: int, wrapped_key: bytes, nonce: bytes,
                ciphertext: bytes | None, *, now: datetime) -> None:
        """`ciphertext` None: the file backend holds it."""
        row = Blob(sha256=sha256, size=size, wrapped_key=wrapped_key, nonce=nonce,
                   ciphertext=ciphertext, created_at=now)
        # A concurrent put of the same content (PostgreSQL, no global write
        # lock) loses the race on the primary key; the winner's row is as good.
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            pass


class DatabaseBlobStore(_EnvelopeStore):
    def put(self, session: Session, data: bytes, *, now: datetime) -> str:
        sha256 = sha256_hex(data)
        if self._row(session, sha256) is not None:
            return sha256
        wrapped_key, nonce, ciphertext = self._seal(sha256, data)
        self._insert(session, sha256, len(data), wrapped_key, nonce, ciphertext, now=now)
        return sha256

    def get(self, session: Session, sha256: str) -> bytes:
        row = self._stored(session, sha256)
        if row.ciphertext is None:
            raise StorageCorrupted(N_("stored document is missing"))
        return self._open(row, row.ciphertext)

    def delete(self, session: Session, sha256: str) -> None:
        row = self._row(session, sha256)
        if row is not None:
            session.delete(row)
            session.flush()

    def exists(self, session: Session, sha256: str) -> bool:
        return _is_address(sha256) and self._row(session, sha256) is not None


class FileBlobStore(_EnvelopeStore):
    def __init__(self, master_key: bytes, root: Path) -> None:
        super().__init__(master_key)
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_for(self, sha256: str, nonce: bytes) -> Path:
        # The nonce is part of the name: two processes storing the same content
        # at once (each with its own data key) never overwrite each other's file.
        _check_address(sha256)
        return self.root / sha256[:2] / f"{sha256[2:]}.{nonce.hex()}"

    def put(self, session: Session, data: bytes, *, now: datetime) -> str:
        sha256 = sha256_hex(data)
        row = self._row(session, sha256)
        if row is not None and self.path_for(sha256, row.nonce).is_file():
            return sha256
        if row is not None:
            # The row survived its file (restored database, lost disk): reseal
            # under the same row so that the reference becomes good again.
            session.delete(row)
            session.flush()
        wrapped_key, nonce, ciphertext = self._seal(sha256, data)
        write_atomically(self.path_for(sha256, nonce), ciphertext)
        self._insert(session, sha256, len(data), wrapped_key, nonce, None, now=now)
        return sha256

    def get(self, session: Session, sha256: str) -> bytes:
        row = self._stored(session, sha256)
        try:
            ciphertext = self.path_for(sha256, row.nonce).read_bytes()
        except FileNotFoundError:
            raise StorageCorrupted(N_("stored document is missing")) from None
        return self._open(row, ciphertext)

    def delete(self, session: Session, sha256: str) -> None:
        row = self._row(session, sha256)
        if row is None:
            return
        path = self.path_for(sha256, row.nonce)
        session.delete(row)
        session.flush()
        _unlink_after_commit(session, path)

    def exists(self, session: Session, sha256: str) -> bool:
        if not _is_address(sha256):
            return False
        row = self._row(session, sha256)
        return row is not None and self.path_for(sha256, row.nonce).is_file()


def make_blob_store(kind: str, master_key: bytes, root: Path | None) -> BlobStore:
    if kind in ("database", "db"):
        return DatabaseBlobStore(master_key)
    if kind in ("file", "files", "filesystem"):
        if root is None:
            raise ConfigurationError(N_("the file blob store needs a folder"))
        return FileBlobStore(master_key, root)
    raise ConfigurationError(N_("blob store kind must be 'database' or 'file'"))


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temp file (mode 0600, mkstemp's default) then rename: readers never see half a
    file. `durable` also fsyncs file and folder, so the rename survives a power cut."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_after_commit(session: Session, path: Path) -> None:
    """The file goes only once the row's deletion is durable, so a rolled-back
    purge never leaves a row whose ciphertext is gone."""
    pending: list[Path] | None = session.info.get(_PENDING_UNLINKS)
    if pending is None:
        pending = []
        session.info[_PENDING_UNLINKS] = pending

        def _after_commit(sess: Session) -> None:
            paths: list[Path] = sess.info.get(_PENDING_UNLINKS) or []
            for pending_path in paths:
                pending_path.unlink(missing_ok=True)
            paths.clear()

        def _after_rollback(sess: Session, previous: SessionTransaction) -> None:
            # A savepoint rolling back (a lost insert race) does not undo the purge.
            if previous.nested or previous.parent is not None:
                return
            paths: list[Path] = sess.info.get(_PENDING_UNLINKS) or []
            paths.clear()

        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_soft_rollback", _after_rollback)
    pending.append(path)
