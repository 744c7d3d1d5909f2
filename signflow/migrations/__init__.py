"""Alembic migrations, applied by `signflow init` (see signflow.migrate)."""
