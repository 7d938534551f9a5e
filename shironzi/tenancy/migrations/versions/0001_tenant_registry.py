"""Tenant registry: event log plus tenants, tenant_modules and api_keys projections.

Revision ID: 0001_tenant_registry
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shironzi.tenancy.models import EventSequence, JSONPayload, UTCDateTime

revision: str = "0001_tenant_registry"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("industry", sa.String(32), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("placement", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lake_namespace", sa.String(1024), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("slug", name="uq_tenants_slug"),
    )
    op.create_index("ix_tenants_status", "tenants", ["status"])

    op.create_table(
        "tenant_modules",
        sa.Column(
            "tenant_id",
            sa.String(32),
            sa.ForeignKey("tenants.id", name="fk_tenant_modules_tenant_id_tenants"),
            primary_key=True,
        ),
        sa.Column("module", sa.String(32), primary_key=True),
        sa.Column("enabled_at", UTCDateTime(), nullable=False),
        sa.Column("enabled_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_tenant_modules_module", "tenant_modules", ["module"])

    op.create_table(
        "api_keys",
        sa.Column("prefix", sa.String(16), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(32),
            sa.ForeignKey("tenants.id", name="fk_api_keys_tenant_id_tenants"),
            nullable=True,
        ),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])

    op.create_table(
        "tenant_events",
        sa.Column("sequence", EventSequence, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(32), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(200), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONPayload, nullable=False),
        sa.UniqueConstraint("id", name="uq_tenant_events_id"),
    )
    op.create_index("ix_tenant_events_tenant_sequence", "tenant_events", ["tenant_id", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_tenant_events_tenant_sequence", table_name="tenant_events")
    op.drop_table("tenant_events")
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_tenant_modules_module", table_name="tenant_modules")
    op.drop_table("tenant_modules")
    op.drop_index("ix_tenants_status", table_name="tenants")
    op.drop_table("tenants")
