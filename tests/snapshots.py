"""Database snapshots for the fixtures: a test starts from a copy of a state built once
per worker (the migrated schema; the `world`) instead of building it again.

Building is what costs: a full Alembic upgrade is over a second on PostgreSQL, and the
world enrols four physicians (key generation, certificates, PIN derivations). Copying
the rows back is a few milliseconds. A copy is exact: the same rows, and on PostgreSQL
the sequences where the built state left them, so ids continue as they would have.

A snapshot is only restored onto the schema it was taken from (`fingerprint`); a test
that changed the schema (a restore from backup, a downgrade) makes the next one rebuild."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, create_engine, make_url
from sqlalchemy.pool import NullPool

from signflow.db import sqlite_file

# Alembic's own bookkeeping: part of the schema, never copied or emptied.
_SKIPPED = {"alembic_version"}

# Everything in the public schema a test could change: relations and their columns,
# constraints, triggers, functions, and the migration the schema is at.
_PG_FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, ',' ORDER BY item), '')) FROM (
  SELECT 'R' || c.relname::text || ':' || c.relkind::text || ':' || coalesce(a.attname::text, '') || ':'
         || coalesce(format_type(a.atttypid, a.atttypmod), '') || ':' || coalesce(a.attnotnull::text, '')
         || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE n.nspname = 'public'
  UNION ALL
  SELECT 'C' || conrelid::regclass::text || conname::text || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'T' || tgrelid::regclass::text || tgname::text || tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'P' || p.proname::text || md5(p.prosrc)
    FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'V' || version_num FROM alembic_version
) AS schema
"""
_PG_SEQUENCES = ("SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename), last_value "
                 "FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1")


@dataclass(frozen=True)
class Snapshot:
    """The rows of every table of one database (PostgreSQL: COPY's binary format, per
    table, parents first; SQLite: a file), with what it takes to check it still fits."""

    dialect: str
    fingerprint: str
    tables: tuple[str, ...]
    rows: dict[str, bytes]
    sequences: tuple[tuple[str, int | None], ...]
    file: Path | None
    state: tuple[Any, ...]


@contextmanager
def _connect(url: str) -> Iterator[Connection]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _tables(conn: Connection) -> tuple[str, ...]:
    """Every table, parents before the tables whose foreign keys point at them."""
    meta = MetaData()
    meta.reflect(conn)
    return tuple(t.name for t in meta.sorted_tables if t.name not in _SKIPPED)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fingerprint(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        return str(conn.exec_driver_sql(_PG_FINGERPRINT).scalar_one())
    rows = conn.exec_driver_sql(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name").all()
    version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return repr((rows, version))


def _state(conn: Connection, tables: tuple[str, ...]) -> tuple[Any, ...]:
    """How many rows each table holds, and where the id sequences are: two states with
    the same `_state` are taken to be the same (used to check that nothing was written
    before `world` replaces the database's content with its snapshot)."""
    counts = conn.exec_driver_sql(
        "SELECT " + ", ".join(f"(SELECT count(*) FROM {_q(t)})" for t in tables)).one()
    if conn.dialect.name == "postgresql":
        sequences = conn.exec_driver_sql(_PG_SEQUENCES).all()
    else:
        has = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first()
        sequences = conn.exec_driver_sql(
            "SELECT name, seq FROM sqlite_sequence ORDER BY name").all() if has else []
    return tuple(counts), tuple(tuple(s) for s in sequences)


def take(url: str, folder: Path) -> Snapshot:
    """Snapshot the database at `url` (SQLite: into a file in `folder`)."""
    with _connect(url) as conn:
        tables = _tables(conn)
        fingerprint = _fingerprint(conn)
        state = _state(conn, tables)
        if conn.dialect.name == "postgresql":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            rows: dict[str, bytes] = {}
            for table in tables:
                with cursor.copy(f"COPY {_q(table)} TO STDOUT (FORMAT BINARY)") as copy:
                    rows[table] = b"".join(bytes(chunk) for chunk in copy)
            sequences = tuple((str(n), v) for n, v in conn.exec_driver_sql(_PG_SEQUENCES).all())
            return Snapshot("postgresql", fingerprint, tables, rows, sequences, None, state)
    source = _sqlite_path(url)
    target = folder / f"snapshot-{len(list(folder.iterdir()))}.db"
    _sqlite_copy(source, target)
    return Snapshot("sqlite", fingerprint, tables, {}, (), target, state)


def state(url: str) -> tuple[Any, ...]:
    """The database's `_state` now (what `restore`'s `expect` compares with)."""
    with _connect(url) as conn:
        return _state(conn, _tables(conn))


def restore(url: str, snapshot: Snapshot, *, expect: tuple[Any, ...] | None = None) -> bool:
    """Put the snapshot's rows back into the database at `url`, in place: engines already
    open on it stay valid. False, and nothing done, if the schema is no longer the
    snapshot's, or if the database's `state` is not `expect` (something was written that
    the snapshot would erase: the caller builds instead)."""
    with _connect(url) as conn:
        try:
            fingerprint = _fingerprint(conn)
        except Exception:  # no alembic_version: a schema dropped, or half built
            return False
        if fingerprint != snapshot.fingerprint:
            return False
        if expect is not None and _state(conn, snapshot.tables) != expect:
            return False
        if snapshot.dialect == "postgresql":
            _pg_restore(conn, snapshot)
            return True
    assert snapshot.file is not None
    _sqlite_copy(snapshot.file, _sqlite_path(url))
    return True


def _pg_restore(conn: Connection, snapshot: Snapshot) -> None:
    # A test database need not survive a power cut: not waiting for the WAL to reach
    # the disk at commit is most of the time saved on a busy machine.
    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    # A few small DELETEs are much faster than TRUNCATE (which makes new files and
    # syncs them) or a new database from a template.
    for table in reversed(snapshot.tables):
        conn.exec_driver_sql(f"DELETE FROM {_q(table)}")
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    for table in snapshot.tables:
        if data := snapshot.rows[table]:
            with cursor.copy(f"COPY {_q(table)} FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(data)
    for name, last in snapshot.sequences:
        # setval(s, 1, false): as new, the next value is 1 (sequences here start at 1).
        conn.exec_driver_sql("SELECT setval(%s::regclass, %s, %s)",
                             (name, last if last is not None else 1, last is not None))


def _sqlite_path(url: str) -> Path:
    path = sqlite_file(url)
    assert path is not None, f"not a SQLite file: {make_url(url)!r}"
    return Path(path)


def _sqlite_copy(source: Path, target: Path) -> None:
    # SQLite's online backup: a consistent copy even with the WAL not checkpointed, and
    # written through SQLite's locks, so connections already open on `target` see it.
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
