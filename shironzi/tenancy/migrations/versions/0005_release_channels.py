"""Release channels: each tenant's channel, and the model rollouts that move versions through them in waves.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shironzi.tenancy.models import JSONPayload, UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("channel", sa.String(200), nullable=False, server_default="stable"))
    op.create_index("ix_tenants_channel", "tenants", ["channel"])

    op.create_table(
        "model_rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("candidate", sa.String(32), nullable=False),
        sa.Column("baseline", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("active_model", sa.String(64), nullable=True),
        sa.Column("waves", JSONPayload, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.String(2000), nullable=True),
        sa.UniqueConstraint("active_model", name="uq_model_rollouts_active_model"),
    )
    op.create_index("ix_model_rollouts_model", "model_rollouts", ["model"])


def downgrade() -> None:
    op.drop_index("ix_model_rollouts_model", table_name="model_rollouts")
    op.drop_table("model_rollouts")
    op.drop_index("ix_tenants_channel", table_name="tenants")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("channel")
