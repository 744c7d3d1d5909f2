"""The fixtures' database snapshots (tests/snapshots.py): a restored database is the one
snapshotted, ids included, and a snapshot is never put onto a schema it was not taken from."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests import snapshots


def _run(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                result = conn.execute(text(statement))
                rows = [tuple(r) for r in result] if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


def test_restore_brings_back_the_rows_and_where_ids_continue(database_url, tmp_path):
    _run(database_url, "INSERT INTO destinations (name) VALUES ('first'), ('second')")
    taken = snapshots.take(database_url, tmp_path)
    _run(database_url, "DELETE FROM destinations WHERE name = 'first'",
         "INSERT INTO destinations (name) VALUES ('third'), ('fourth')")

    assert snapshots.restore(database_url, taken)
    assert _run(database_url, "SELECT id, name FROM destinations ORDER BY id") == [
        (1, "first"), (2, "second")]
    # The next id is the one after the snapshot's rows, not after the rows it erased.
    assert _run(database_url, "INSERT INTO destinations (name) VALUES ('next')",
                "SELECT id FROM destinations WHERE name = 'next'") == [(3,)]


def test_restore_refuses_another_schema_and_a_changed_state(database_url, tmp_path):
    taken = snapshots.take(database_url, tmp_path)
    before = snapshots.state(database_url)
    _run(database_url, "INSERT INTO destinations (name) VALUES ('written by a fixture')")

    # `world` restores only onto the state its snapshot was built on.
    assert not snapshots.restore(database_url, taken, expect=before)
    assert _run(database_url, "SELECT name FROM destinations") == [("written by a fixture",)]
    assert snapshots.restore(database_url, taken, expect=snapshots.state(database_url))
    assert _run(database_url, "SELECT name FROM destinations") == []

    _run(database_url, "CREATE TABLE stray (id INTEGER PRIMARY KEY)")
    assert not snapshots.restore(database_url, taken)
    _run(database_url, "DROP TABLE stray", "DROP TABLE alembic_version")
    assert not snapshots.restore(database_url, taken)  # half a schema: the caller rebuilds
