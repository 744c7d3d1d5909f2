"""Restore of a backup into an empty instance.

Restore verifies every hash before it writes anything, refuses a target that
already holds users, requests or an audit log, refuses to overwrite a key file
with different content, writes blob files and keys first and the rows last
(a crash leaves at worst unreferenced files), then migrates to the newest
schema.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, Table, inspect, text

from signflow.core.errors import Conflict, InvalidInput
from signflow.core.i18n import N_
from signflow.core.ops.backup_format import (
    BATCH,
    Progress,
    ProgressCounter,
    decode_row,
    open_archive,
    verify_archive,
)
from signflow.core.storage import write_atomically
from signflow.db import Base, make_engine
from signflow.migrate import alembic_config
from signflow.models import AuditEntry, Blob, SignatureRequest, User

# Tables whose rows make an instance "not empty": restoring over them would mix two sites.
OCCUPIED_BY = (User.__tablename__, SignatureRequest.__tablename__, AuditEntry.__tablename__)


@dataclass(frozen=True)
class RestoreResult:
    rows: int
    blob_files: int
    key_files: tuple[str, ...]
    schema_revision: str | None


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
                    N_("The target database is not empty (it has %(name)s): restore only "
                       "into a new, empty instance."), params={'name': name}
                )


def _plan_files(tar: tarfile.TarFile, prefix: str, target: Path, what: str) -> list[str]:
    """Members still to write under `target`; Conflict when one exists with other content."""
    todo: list[str] = []
    for relative in _names(tar, prefix):
        path = target / relative
        if path.exists():
            if not path.is_file() or path.read_bytes() != _read(tar, prefix + relative):
                raise Conflict(
                    N_("%(what)s %(relative)s already exists with other content: restore "
                       "only into an empty keys folder and instance."),
                           params={'what': what, 'relative': relative}
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


def _tables_at_backup_revision(conn: Connection) -> list[Table]:
    """The tables as the backup's schema revision has them (a backup of an older
    release keeps columns a later migration moves, e.g. the route of 0.1), typed like
    the models wherever a column still exists, so that values decode the same way."""
    reflected = MetaData()
    reflected.reflect(conn)
    current = Base.metadata.tables
    shaped = MetaData()
    tables: list[Table] = []
    for table in reflected.sorted_tables:
        if table.name == "alembic_version":
            continue
        model = current.get(table.name)
        tables.append(Table(table.name, shaped, *(
            Column(column.name,
                   model.c[column.name].type if model is not None and column.name in model.c
                   else column.type,
                   primary_key=column.primary_key)
            for column in table.columns
        )))
    return tables


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
        with open_archive(archive) as tar:
            key_writes = _plan_files(tar, "keys/", keys_path, "key file")
            # The backup's ciphertext files land in whichever backend the target uses.
            blob_writes = _plan_files(tar, "blobs/", blob_root, "blob file") if blob_root else []
            total = sum(manifest.tables.values()) + len(key_writes) + len(blob_writes)
            tick = ProgressCounter(progress, total)
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
                tables = _tables_at_backup_revision(conn)
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
                        row = decode_row(table, json.loads(line))
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
                N_("The backup lacks the stored file of blob %(sha256)s…."), params={'sha256': sha256[:16]}
            ) from None
        return {**row, "ciphertext": data}
    if blob_root is not None and row.get("ciphertext") is not None:
        write_atomically(blob_root / relative, bytes(row["ciphertext"]))
        return {**row, "ciphertext": None}
    return row
