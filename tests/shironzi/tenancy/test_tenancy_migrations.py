"""The Alembic migrations shipped in the package create exactly the models' schema."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shironzi.tenancy import Registry
from shironzi.tenancy.db import HEAD_REVISION, MIGRATIONS_DIR, alembic_config, write_transaction
from shironzi.tenancy.models import metadata


def test_head_revision_constant_matches_the_scripts() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION
    for name in ("alembic.ini", "env.py", "script.py.mako"):
        assert (MIGRATIONS_DIR / name).is_file()


def test_migrated_schema_matches_the_models(registry: Registry) -> None:
    with registry.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == HEAD_REVISION
        assert compare_metadata(context, metadata) == []


def test_migrations_go_down_and_up_again(registry: Registry) -> None:
    with write_transaction(registry.engine) as conn:
        command.downgrade(alembic_config(conn), "base")
    with registry.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is None
    registry.init_schema()
    registry.init_schema()  # idempotent
    with registry.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD_REVISION
