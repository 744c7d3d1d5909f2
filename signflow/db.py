"""SQLAlchemy 2.x engine and sessions. Nothing is created at import time.

SQLite has one writer at a time. A transaction starts deferred: it reads from a
WAL snapshot and holds no lock, however long it works (a sandbox run, a report
being laid out, a password hash). Its first write, or its first locking read
(`SELECT ... FOR UPDATE`, which SQLite does not have), ends that read snapshot
and takes the write lock with `BEGIN IMMEDIATE`, which waits for the current
writer (busy_timeout) instead of failing. That is what PostgreSQL's READ
COMMITTED and row locks give: what was read before the lock may be older than
what is read after it, so a decision that must not race is taken on rows read
with `with_for_update()`, as on PostgreSQL. An in-place upgrade of the read
transaction is never attempted: in WAL mode it fails at once with SQLITE_BUSY
whenever another writer committed since the snapshot, whatever the timeout.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, Select, create_engine, event, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    pass


# How long a writer waits for the write lock: it is held only for the writes
# themselves, so a wait this long means something is wrong.
SQLITE_BUSY_TIMEOUT_S = 30
WRITE_LOCKED = "signflow.sqlite_write_locked"
# A savepoint is only ever opened around writes (and a COMMIT would end it).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "SAVEPOINT")


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL (None: in memory, or not SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def create_private_file(path: str) -> None:
    """Create `path` readable and writable by its owner only, unless it exists; SQLite
    gives its -wal and -shm files the mode of the database file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except FileNotFoundError:
        return  # no such folder: SQLite will say so on connect
    os.close(fd)


def _is_write(statement: str, context: Any) -> bool:
    if context is not None and (context.isinsert or context.isupdate or context.isdelete):
        return True
    compiled = getattr(context, "compiled", None)
    target = getattr(compiled, "statement", None)
    if isinstance(target, Select) and target._for_update_arg is not None:
        return True
    return statement.lstrip().upper().startswith(_WRITES)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            create_private_file(path)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the single writer; foreign keys are
            # off by default in SQLite. No autobegin: transactions are ours.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            conn.info[WRITE_LOCKED] = True  # our own BEGIN is not a write
            conn.exec_driver_sql("BEGIN DEFERRED")
            conn.info[WRITE_LOCKED] = False

        @event.listens_for(engine, "before_cursor_execute")
        def _sqlite_write_lock(conn, _cursor, statement, _params, context, _many):  # type: ignore[no-untyped-def]
            if conn.info.get(WRITE_LOCKED, True) or not _is_write(statement, context):
                return
            # The transaction has only read so far: end its snapshot, then queue
            # for the write lock. Nothing is lost: nothing was written.
            raw = conn.connection.dbapi_connection
            raw.execute("COMMIT")
            raw.execute("BEGIN IMMEDIATE")
            conn.info[WRITE_LOCKED] = True

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
