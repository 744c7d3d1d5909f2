"""The backup archive format, shared by backup and restore: members, manifest,
rows as JSON lines, progress counting, and the verification of an archive.

A backup is ONE uncompressed tar file: easy to copy, to checksum and to keep
off site. Documents are encrypted already (and ciphertext does not compress),
so the tar holds them as they are:

    db/<table>.jsonl      every row of every table, in dependency order;
                          bytes as base64, times as ISO 8601 UTC
    blobs/<aa>/<rest>     ciphertext files of the file blob backend
    keys/<name>           certificates and public keys (private keys and
                          sealed secrets only when asked, still encrypted)
    manifest.json         last: schema revision, row counts, SHA-256 of
                          every other member
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, LargeBinary, Table, inspect
from sqlalchemy.types import DateTime, TypeDecorator

import signflow.models  # noqa: F401  (registers every table on Base.metadata)
from signflow.core.errors import InvalidInput
from signflow.core.i18n import N_
from signflow.db import Base

FORMAT = "signflow-backup/1"
MANIFEST = "manifest.json"
BATCH = 500
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Manifest:
    created_at: str
    schema_revision: str | None
    dialect: str
    include_private_keys: bool
    tables: dict[str, int]
    files: dict[str, str] = field(default_factory=dict)


def _is_binary(column_type: Any) -> bool:
    impl = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(impl, LargeBinary)


def _is_time(column_type: Any) -> bool:
    impl = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(impl, DateTime)


def encode_row(table: Table, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row._mapping[column]
        if value is not None and _is_binary(column.type):
            value = base64.b64encode(value).decode("ascii")
        elif value is not None and _is_time(column.type):
            value = value.astimezone(UTC).isoformat()
        out[column.name] = value
    return out


def decode_row(table: Table, data: dict[str, Any]) -> dict[str, Any]:
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


def tables_in(conn: Connection) -> list[Table]:
    present = set(inspect(conn).get_table_names())
    return [t for t in Base.metadata.sorted_tables if t.name in present]


class ProgressCounter:
    """Counts steps and reports (done, total) to the caller's callback, from (0, total)."""

    def __init__(self, report: Progress | None, total: int) -> None:
        self.report, self.total, self.done = report, total, 0
        if report is not None:
            report(0, total)

    def __call__(self, step: int = 1) -> None:
        self.done += step
        if self.report is not None:
            self.report(self.done, self.total)


def open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:")
    except (OSError, tarfile.TarError):
        raise InvalidInput(
            N_("%(name)s is not a signflow backup (unreadable tar file)."), params={'name': archive.name}
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
        raise InvalidInput(N_('%(name)s: no such backup file.'), params={'name': archive.name})
    with open_archive(archive) as tar:
        try:
            member = tar.getmember(MANIFEST)
            handle = tar.extractfile(member)
            assert handle is not None
            raw = json.loads(handle.read())
        except (KeyError, ValueError, AssertionError, tarfile.TarError):
            raise InvalidInput(N_("The backup has no readable manifest: refused.")) from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InvalidInput(N_("The backup was not written by this version of signflow: refused."))
        files: dict[str, str] = dict(raw.get("files") or {})
        seen: set[str] = set()
        try:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                if not member.isfile() or not _safe_member_name(member.name):
                    raise InvalidInput(
                        N_("The backup holds an unexpected entry %(name)s: refused."),
                           params={'name': repr(member.name)}
                    )
                expected = files.get(member.name)
                handle = tar.extractfile(member)
                digest = hashlib.sha256()
                assert handle is not None
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                if expected is None or digest.hexdigest() != expected:
                    raise InvalidInput(
                        N_("The backup is corrupted (%(name)s does not match its manifest): "
                           "nothing was restored."), params={'name': member.name}
                    )
                seen.add(member.name)
        except (tarfile.TarError, OSError, EOFError):
            raise InvalidInput(
                N_("The backup file is truncated or damaged: nothing was restored.")
            ) from None
        if seen != set(files):
            raise InvalidInput(
                N_("The backup is incomplete (files listed in its manifest are "
                "missing): nothing was restored.")
            )
    return Manifest(
        created_at=str(raw.get("created_at")),
        schema_revision=raw.get("schema_revision"),
        dialect=str(raw.get("dialect")),
        include_private_keys=bool(raw.get("include_private_keys")),
        tables={str(k): int(v) for k, v in (raw.get("tables") or {}).items()},
        files=files,
    )
