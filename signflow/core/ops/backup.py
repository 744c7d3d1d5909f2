"""Consistent backups of an instance and their restore into an empty one.

A backup is ONE uncompressed tar file: easy to copy, to checksum and to keep
off site, written under a temporary name and renamed only once complete, so a
crashed backup never passes for a good one. Documents are encrypted already
(and ciphertext does not compress), so the tar holds them as they are:

    db/<table>.jsonl      every row of every table, in dependency order;
                          bytes as base64, times as ISO 8601 UTC
    blobs/<aa>/<rest>     ciphertext files of the file blob backend
    keys/<name>           certificates and public keys (private keys and
                          sealed secrets only when asked, still encrypted)
    manifest.json         last: schema revision, row counts, SHA-256 of
                          every other member

The database is read inside one transaction with a stable view (PostgreSQL:
SERIALIZABLE READ ONLY DEFERRABLE; SQLite: a deferred BEGIN, whose first read
pins a WAL snapshot without blocking writers), so the rows, and the blob
files named by those rows, are one instant of the service.

Restore verifies every hash before it writes anything, refuses a target that
already holds users, requests or an audit log, refuses to overwrite a key file
with different content, writes blob files and keys first and the rows last
(a crash leaves at worst unreferenced files), then migrates to the newest
schema.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    LargeBinary,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.types import DateTime, TypeDecorator

import signflow.models  # noqa: F401  (registers every table on Base.metadata)
from signflow.core.errors import Conflict, InvalidInput
from signflow.core.storage import write_atomically
from signflow.db import Base, make_engine
from signflow.migrate import alembic_config
from signflow.models import AuditEntry, Blob, SignatureRequest, User

FORMAT = "signflow-backup/1"
MANIFEST = "manifest.json"
PUBLIC_KEY_SUFFIXES = (".crt", ".pub")
PUBLIC_KEY_NAMES = frozenset({"pki.json", "README.md"})
BATCH = 500
# Tables whose rows make an instance "not empty": restoring over them would mix two sites.
OCCUPIED_BY = (User.__tablename__, SignatureRequest.__tablename__, AuditEntry.__tablename__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    rows: int
    blob_files: int
    key_files: tuple[str, ...]
    schema_revision: str | None
    sha256: str


@dataclass(frozen=True)
class Manifest:
    created_at: str
    schema_revision: str | None
    dialect: str
    include_private_keys: bool
    tables: dict[str, int]
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreResult:
    rows: int
    blob_files: int
    key_files: tuple[str, ...]
    schema_revision: str | None


# -- rows <-> JSON -----------------------------------------------------------


def _is_binary(column_type: Any) -> bool:
    impl = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(impl, LargeBinary)


def _is_time(column_type: Any) -> bool:
    impl = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(impl, DateTime)


def _encode_row(table: Table, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row._mapping[column]
        if value is not None and _is_binary(column.type):
            value = base64.b64encode(value).decode("ascii")
        elif value is not None and _is_time(column.type):
            value = value.astimezone(UTC).isoformat()
        out[column.name] = value
    return out


def _decode_row(table: Table, data: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in data:
            continue  # a column added after the backup: its default applies
        value = data[column.name]
        if value is not None and _is_binary(column.type):
            value = base64.b64decode(value)
        elif value is not None and _is_time(column.type):
            value = datetime.fromisoformat(value)
        row[column.name] = value
    return row


# -- engines with the isolation a backup needs ---------------------------------


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


def _tables_in(conn: Connection) -> list[Table]:
    present = set(inspect(conn).get_table_names())
    return [t for t in Base.metadata.sorted_tables if t.name in present]


# -- backup --------------------------------------------------------------------


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



class _Progress:
    """Counts steps and reports (done, total) to the caller's callback, from (0, total)."""

    def __init__(self, report: Progress | None, total: int) -> None:
        self.report, self.total, self.done = report, total, 0
        if report is not None:
            report(0, total)

    def __call__(self, step: int = 1) -> None:
        self.done += step
        if self.report is not None:
            self.report(self.done, self.total)

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
        raise Conflict(f"{out.name} already exists: choose a new name for the backup.")
    if not keys_path.is_dir():
        raise InvalidInput("The keys folder does not exist.")
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
            tables = _tables_in(conn)
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
            tick = _Progress(progress, total)
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
                                _encode_row(table, row), ensure_ascii=False, separators=(",", ":")
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
                        f"the stored file of blob {sha256[:16]}… is missing: run `signflow check`"
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


# -- restore -------------------------------------------------------------------


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:")
    except (OSError, tarfile.TarError):
        raise InvalidInput(
            f"{archive.name} is not a signflow backup (unreadable tar file)."
        ) from None


def _safe_member_name(name: str) -> bool:
    parts = name.split("/")
    return (
        not name.startswith("/")
        and ".." not in parts
        and "" not in parts
        and parts[0] in ("db", "blobs", "keys")
    )


def verify_archive(archive: Path) -> Manifest:
    """Check every member against the manifest; InvalidInput on any difference."""
    archive = Path(archive)
    if not archive.is_file():
        raise InvalidInput(f"{archive.name}: no such backup file.")
    with _open_archive(archive) as tar:
        try:
            member = tar.getmember(MANIFEST)
            handle = tar.extractfile(member)
            assert handle is not None
            raw = json.loads(handle.read())
        except (KeyError, ValueError, AssertionError, tarfile.TarError):
            raise InvalidInput("The backup has no readable manifest: refused.") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InvalidInput("The backup was not written by this version of signflow: refused.")
        files: dict[str, str] = dict(raw.get("files") or {})
        seen: set[str] = set()
        try:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                if not member.isfile() or not _safe_member_name(member.name):
                    raise InvalidInput(
                        f"The backup holds an unexpected entry {member.name!r}: refused."
                    )
                expected = files.get(member.name)
                handle = tar.extractfile(member)
                digest = hashlib.sha256()
                assert handle is not None
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                if expected is None or digest.hexdigest() != expected:
                    raise InvalidInput(
                        f"The backup is corrupted ({member.name} does not match its manifest): "
                        "nothing was restored."
                    )
                seen.add(member.name)
        except (tarfile.TarError, OSError, EOFError):
            raise InvalidInput(
                "The backup file is truncated or damaged: nothing was restored."
            ) from None
        if seen != set(files):
            raise InvalidInput(
                "The backup is incomplete (files listed in its manifest are "
                "missing): nothing was restored."
            )
    return Manifest(
        created_at=str(raw.get("created_at")),
        schema_revision=raw.get("schema_revision"),
        dialect=str(raw.get("dialect")),
        include_private_keys=bool(raw.get("include_private_keys")),
        tables={str(k): int(v) for k, v in (raw.get("tables") or {}).items()},
        files=files,
    )


def _names(tar: tarfile.TarFile, prefix: str) -> list[str]:
    return [
        m.name.removeprefix(prefix)
        for m in tar.getmembers()
        if m.isfile() and m.name.startswith(prefix)
    ]


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    assert handle is not None
    return handle.read()


def _require_empty_target(engine: Engine) -> None:
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        for name in OCCUPIED_BY:
            if name in present and conn.scalar(text(f'SELECT COUNT(*) FROM "{name}"')):  # noqa: S608 (names from our metadata)
                raise Conflict(
                    f"The target database is not empty (it has {name}): restore only into a new, "
                    "empty instance."
                )


def _plan_files(tar: tarfile.TarFile, prefix: str, target: Path, what: str) -> list[str]:
    """Members still to write under `target`; Conflict when one exists with other content."""
    todo: list[str] = []
    for relative in _names(tar, prefix):
        path = target / relative
        if path.exists():
            if not path.is_file() or path.read_bytes() != _read(tar, prefix + relative):
                raise Conflict(
                    f"{what} {relative} already exists with other content: "
                    "restore only into an empty keys folder and instance."
                )
            continue
        todo.append(relative)
    return todo


def reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """Rows came in with their ids: the next insert must not reuse one."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or pk[0].autoincrement is False or not isinstance(pk[0].type, Integer):
            continue
        sequence = conn.scalar(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}
        )
        if sequence is None:
            continue
        # Table and column names come from our own metadata, never from input.
        column, name = pk[0].name, table.name
        query = (
            f'SELECT setval(:s, COALESCE((SELECT MAX("{column}") FROM "{name}"), 1), '  # noqa: S608
            f'(SELECT COUNT(*) > 0 FROM "{name}"))'
        )
        conn.execute(
            text(query),
            {"s": sequence},
        )


def restore(
    archive: Path,
    *,
    database_url: str,
    keys_path: Path,
    blob_root: Path | None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore `archive` into an empty instance (database, blob folder, keys folder)."""
    archive = Path(archive)
    manifest = verify_archive(archive)
    engine = make_engine(database_url)
    try:
        _require_empty_target(engine)
        with _open_archive(archive) as tar:
            key_writes = _plan_files(tar, "keys/", keys_path, "key file")
            # The backup's ciphertext files land in whichever backend the target uses.
            blob_writes = _plan_files(tar, "blobs/", blob_root, "blob file") if blob_root else []
            total = sum(manifest.tables.values()) + len(key_writes) + len(blob_writes)
            tick = _Progress(progress, total)
            for relative in key_writes:
                write_atomically(keys_path / relative, _read(tar, "keys/" + relative))
                tick()
            for relative in blob_writes:
                assert blob_root is not None
                write_atomically(blob_root / relative, _read(tar, "blobs/" + relative))
                tick()
            # The schema the rows were dumped from; newer migrations run after.
            command.upgrade(alembic_config(database_url), manifest.schema_revision or "head")
            rows = 0
            with engine.begin() as conn:
                tables = _tables_in(conn)
                for table in reversed(tables):
                    conn.execute(table.delete())  # seed rows of the migrations (audit head...)
                by_name = {t.name: t for t in tables}
                for name in (t.name for t in tables if t.name in manifest.tables):
                    table = by_name[name]
                    try:
                        handle = tar.extractfile(f"db/{name}.jsonl")
                    except KeyError:
                        continue
                    assert handle is not None
                    batch: list[dict[str, Any]] = []
                    for line in handle:
                        row = _decode_row(table, json.loads(line))
                        if name == Blob.__tablename__:
                            row = _place_ciphertext(row, blob_root, tar)
                        batch.append(row)
                        if len(batch) >= BATCH:
                            conn.execute(table.insert(), batch)
                            rows += len(batch)
                            tick(len(batch))
                            batch = []
                    if batch:
                        conn.execute(table.insert(), batch)
                        rows += len(batch)
                        tick(len(batch))
                reset_sequences(conn, tables)
        command.upgrade(alembic_config(database_url), "head")
    finally:
        engine.dispose()
    return RestoreResult(
        rows=rows,
        blob_files=len(blob_writes),
        key_files=tuple(sorted(key_writes)),
        schema_revision=manifest.schema_revision,
    )


def _place_ciphertext(
    row: dict[str, Any], blob_root: Path | None, tar: tarfile.TarFile
) -> dict[str, Any]:
    """Move ciphertext between the row and a file to suit the target backend;
    the sealed bytes are the same in both."""
    sha256, nonce = str(row["sha256"]), bytes(row["nonce"])
    relative = f"{sha256[:2]}/{sha256[2:]}.{nonce.hex()}"
    if blob_root is None and row.get("ciphertext") is None:
        try:
            data = _read(tar, "blobs/" + relative)
        except KeyError:
            raise InvalidInput(
                f"The backup lacks the stored file of blob {sha256[:16]}…."
            ) from None
        return {**row, "ciphertext": data}
    if blob_root is not None and row.get("ciphertext") is not None:
        write_atomically(blob_root / relative, bytes(row["ciphertext"]))
        return {**row, "ciphertext": None}
    return row
