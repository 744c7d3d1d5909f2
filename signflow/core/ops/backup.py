"""Consistent backups of an instance, as one tar file (format: signflow.core.ops.backup_format).

The tar file is written under a temporary name and renamed only once complete,
so a crashed backup never passes for a good one.

The database is read inside one transaction with a stable view (PostgreSQL:
SERIALIZABLE READ ONLY DEFERRABLE; SQLite: a deferred BEGIN, whose first read
pins a WAL snapshot without blocking writers), so the rows, and the blob
files named by those rows, are one instant of the service.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, func, select

from signflow.core.errors import Conflict, InvalidInput
from signflow.core.i18n import N_
from signflow.core.ops.backup_format import (
    BATCH,
    FORMAT,
    MANIFEST,
    Progress,
    ProgressCounter,
    encode_row,
    tables_in,
)
from signflow.models import Blob

PUBLIC_KEY_SUFFIXES = (".crt", ".pub")
PUBLIC_KEY_NAMES = frozenset({"pki.json", "README.md"})


@dataclass(frozen=True)
class BackupResult:
    path: Path
    rows: int
    blob_files: int
    key_files: tuple[str, ...]
    schema_revision: str | None
    sha256: str


def _snapshot_engine(database_url: str) -> Engine:
    if not database_url.startswith("sqlite"):
        return create_engine(database_url).execution_options(
            isolation_level="SERIALIZABLE", postgresql_readonly=True, postgresql_deferrable=True
        )
    engine = create_engine(database_url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA busy_timeout=30000")

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        # Deferred, unlike the service's BEGIN IMMEDIATE: a reader pins a WAL
        # snapshot at its first SELECT and never holds the write lock.
        conn.exec_driver_sql("BEGIN")

    return engine


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _public_key_file(name: str) -> bool:
    return name.endswith(PUBLIC_KEY_SUFFIXES) or name in PUBLIC_KEY_NAMES


def _key_files(keys_path: Path, include_private_keys: bool) -> list[Path]:
    files = sorted(p for p in keys_path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [p for p in files if include_private_keys or _public_key_file(p.name)]


def _add(
    tar: tarfile.TarFile, name: str, fh: IO[bytes], size: int, digests: dict[str, str], sha256: str
) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    tar.addfile(info, fh)
    digests[name] = sha256


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, digests: dict[str, str]) -> None:
    _add(tar, name, io.BytesIO(data), len(data), digests, hashlib.sha256(data).hexdigest())


def backup(
    database_url: str,
    *,
    keys_path: Path,
    blob_root: Path | None,
    out: Path,
    include_private_keys: bool,
    now: datetime,
    progress: Progress | None = None,
) -> BackupResult:
    """Write a consistent snapshot to the tar file `out` (refuses to overwrite)."""
    out = Path(out)
    if out.exists():
        raise Conflict(N_("%(name)s already exists: choose a new name for the backup."),
                       params={'name': out.name})
    if not keys_path.is_dir():
        raise InvalidInput(N_("The keys folder does not exist."))
    key_files = _key_files(keys_path, include_private_keys)
    engine = _snapshot_engine(database_url)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    partial = Path(partial_name)
    digests: dict[str, str] = {}
    rows_total = blob_files = 0
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
            engine.connect() as conn,
            conn.begin(),
        ):
            tables = tables_in(conn)
            counts = {
                t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in tables
            }
            blob_refs: list[tuple[str, bytes]] = []
            if blob_root is not None and Blob.__tablename__ in counts:
                blob_refs = [
                    (r.sha256, r.nonce)
                    for r in conn.execute(
                        select(Blob.sha256, Blob.nonce).where(Blob.ciphertext.is_(None))
                    )
                ]
            total = sum(counts.values()) + len(blob_refs) + len(key_files)
            tick = ProgressCounter(progress, total)
            revision = _revision(conn)
            for table in tables:
                with tempfile.TemporaryFile() as spool:
                    digest = hashlib.sha256()
                    pk = list(table.primary_key.columns)
                    result = conn.execution_options(yield_per=BATCH).execute(
                        select(table).order_by(*pk)
                    )
                    for partition in result.partitions():
                        chunk = b"".join(
                            json.dumps(
                                encode_row(table, row), ensure_ascii=False, separators=(",", ":")
                            ).encode()
                            + b"\n"
                            for row in partition
                        )
                        spool.write(chunk)
                        digest.update(chunk)
                        rows_total += len(partition)
                        tick(len(partition))
                    size = spool.tell()
                    spool.seek(0)
                    _add(tar, f"db/{table.name}.jsonl", spool, size, digests, digest.hexdigest())
            for sha256, nonce in blob_refs:
                assert blob_root is not None
                relative = f"{sha256[:2]}/{sha256[2:]}.{nonce.hex()}"
                try:
                    ciphertext = (blob_root / relative).read_bytes()
                except FileNotFoundError:
                    raise Conflict(
                        N_("the stored file of blob %(sha256)s… is missing: run `signflow "
                           "check`"), params={'sha256': sha256[:16]}
                    ) from None
                _add_bytes(tar, f"blobs/{relative}", ciphertext, digests)
                blob_files += 1
                tick()
            for path in key_files:
                _add_bytes(tar, f"keys/{path.name}", path.read_bytes(), digests)
                tick()
            manifest = {
                "format": FORMAT,
                "created_at": now.astimezone(UTC).isoformat(),
                "schema_revision": revision,
                "dialect": engine.dialect.name,
                "include_private_keys": include_private_keys,
                "tables": counts,
                "files": digests,
            }
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), {})
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    return BackupResult(
        path=out,
        rows=rows_total,
        blob_files=blob_files,
        key_files=tuple(p.name for p in key_files),
        schema_revision=revision,
        sha256=_file_sha256(out),
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
