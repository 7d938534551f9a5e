"""Engines for the registry database (SQLite embedded, PostgreSQL in production) and its migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shironzi.errors import ConfigurationError, ServiceUnavailableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks it against Alembic's script directory).
HEAD_REVISION = "0005"
READ_ONLY_SQLSTATE = "25006"  # PostgreSQL's read_only_sql_transaction: a write sent to a hot standby
_MIGRATION_LOCK_ID = 0x5348_495A  # "SHIZ": PostgreSQL advisory lock serialising concurrent first runs


def create_registry_engine(url: str) -> Engine:
    """An engine tuned for the registry; SQLite gets WAL, foreign keys and explicit BEGIN control."""
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        # Pre-ping: after a database restart every pooled connection is dead, and without the ping the first
        # request of each API worker failed with a 500 (tests/e2e/test_production_topology.py). The ping is
        # one round trip per checkout; key checks are cached, so it is rarely paid per request.
        return sa.create_engine(url, pool_recycle=1800, pool_pre_ping=True)
    raise ConfigurationError(
        f"unsupported registry database {backend!r}: use sqlite:/// or postgresql+psycopg://"
    )


def _install_sqlite_hooks(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" hook emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front so two writers never deadlock on a lock upgrade.
        mode = "IMMEDIATE" if conn.get_execution_options().get("registry_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One read-write transaction (SQLite: BEGIN IMMEDIATE); commits on success, rolls back on any error."""
    with engine.connect() as conn:
        conn.execution_options(registry_write=True)
        try:
            with conn.begin():
                yield conn
        except Exception as exc:  # SQLAlchemy wraps the driver's error; a raw COPY raises psycopg's own
            states = (getattr(exc, "sqlstate", None), getattr(getattr(exc, "orig", None), "sqlstate", None))
            if READ_ONLY_SQLSTATE in states:
                raise ServiceUnavailableError(
                    "the registry database is a read-only hot standby: writes wait for its promotion"
                ) from exc
            raise


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe when several processes start at once)."""
    with engine.connect() as conn:
        if sa.inspect(conn).has_table("alembic_version"):
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            if [row[0] for row in versions] == [HEAD_REVISION]:
                return  # the common case costs one query and no Alembic import
    from alembic import command

    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        command.upgrade(alembic_config(conn), "head")
