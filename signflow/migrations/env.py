from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from signflow import models  # noqa: F401 - registers the tables
from signflow.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:
            # SQLite drops a column by rebuilding the table (batch mode); with foreign
            # keys on, dropping the old table fails while other tables point at it.
            # Off for the migration (outside any transaction, as SQLite requires),
            # and every reference is checked before they go back on.
            raw.execute("PRAGMA foreign_keys=OFF")
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        if raw is not None:
            broken = raw.execute("PRAGMA foreign_key_check").fetchall()
            raw.execute("PRAGMA foreign_keys=ON")
            if broken:
                raise RuntimeError(f"migration left {len(broken)} broken foreign key(s): {broken[:5]}")
    engine.dispose()
    _ = pool


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
