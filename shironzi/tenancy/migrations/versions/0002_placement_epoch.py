"""Placement epoch: a per-tenant counter that every placement flip (an online tenant move) increases.

Writers fence their commits with it (`ingestion.bronze.BronzeLander`); the partial index keeps the read of
the moved tenants (`placement_epoch > 0`) cheap at 100,000 tenants.

Revision ID: 0002
Revises: 0001_tenant_registry
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001_tenant_registry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("placement_epoch", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_tenants_placement_epoch", "tenants", ["placement_epoch"])


def downgrade() -> None:
    op.drop_index("ix_tenants_placement_epoch", table_name="tenants")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("placement_epoch")
