"""Alembic environment: the URL comes from the coordinator (see coordinator_service/db/migrate.py), or,
for a developer running ``alembic -c alembic.ini ...``, from ``CREAMFL_DATABASE_URL``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from coordinator_service.db.models import Base

target_metadata = Base.metadata


def database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("CREAMFL_DATABASE_URL")
    if not url:
        raise SystemExit("set CREAMFL_DATABASE_URL to the database to migrate")
    return url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
