"""SQLAlchemy models of the registry: the event log and the projections rebuilt from it.

The Alembic migrations in `migrations/versions` create exactly these tables (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONPayload = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
EventSequence = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class TenantRow(Base):
    """Projection: the current state of each tenant."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    slug: Mapped[str] = mapped_column(sa.String(63), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    industry: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    region: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    plan: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    placement: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    lake_namespace: Mapped[str] = mapped_column(sa.String(1024), nullable=False)
    placement_epoch: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Release channel (migration 0005): `stable`, `canary` or `pinned:<model>@<version>`.
    channel: Mapped[str] = mapped_column(sa.String(200), nullable=False, server_default="stable", index=True)


class TenantModuleRow(Base):
    """Projection: one row per module switched on for a tenant."""

    __tablename__ = "tenant_modules"

    tenant_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("tenants.id"), primary_key=True)
    module: Mapped[str] = mapped_column(sa.String(32), primary_key=True, index=True)
    enabled_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    enabled_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)


class ApiKeyRow(Base):
    """Projection: API keys, stored only as a salted hash; `tenant_id` is NULL for platform admin keys."""

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        sa.String(32), sa.ForeignKey("tenants.id"), nullable=True, index=True
    )
    key_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    salt: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    scopes: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    label: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TenantEventRow(Base):
    """The immutable event log: the source of truth the projections are rebuilt from."""

    __tablename__ = "tenant_events"
    __table_args__ = (sa.Index("ix_tenant_events_tenant_sequence", "tenant_id", "sequence"),)

    sequence: Mapped[int] = mapped_column(EventSequence, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True, nullable=False)
    tenant_id: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    type: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    actor: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    purpose: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONPayload, nullable=False)


class DataExportRow(Base):
    """An export of one tenant's rows (`shironzi.exports`): a job record, not a projection of the event log."""

    __tablename__ = "data_exports"
    __table_args__ = (sa.Index("ix_data_exports_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    table_name: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    format: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    start_date: Mapped[date] = mapped_column(sa.Date(), nullable=False)
    end_date: Mapped[date] = mapped_column(sa.Date(), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    rows: Mapped[int | None] = mapped_column(sa.BigInteger(), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger(), nullable=True)
    uri: Mapped[str | None] = mapped_column(sa.String(1024), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    requested_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class RegionRow(Base):
    """DR state of one region: who serves its tenants, and the fencing epoch its writers must hold."""

    __tablename__ = "regions"

    region: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    epoch: Mapped[int] = mapped_column(sa.Integer(), nullable=False)
    serving_region: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ModelRolloutRow(Base):
    """A model rollout (migration 0005): its waves and their analyses; `active_model` is the model's name while
    the rollout runs or is paused (unique: one active rollout per model) and NULL once it has finished."""

    __tablename__ = "model_rollouts"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model: Mapped[str] = mapped_column(sa.String(64), nullable=False, index=True)
    candidate: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    baseline: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    active_model: Mapped[str | None] = mapped_column(sa.String(64), unique=True, nullable=True)
    waves: Mapped[list[dict[str, Any]]] = mapped_column(JSONPayload, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    reason: Mapped[str | None] = mapped_column(sa.String(2000), nullable=True)


tenants = cast(sa.Table, TenantRow.__table__)
tenant_modules = cast(sa.Table, TenantModuleRow.__table__)
api_keys = cast(sa.Table, ApiKeyRow.__table__)
tenant_events = cast(sa.Table, TenantEventRow.__table__)
data_exports = cast(sa.Table, DataExportRow.__table__)
regions = cast(sa.Table, RegionRow.__table__)
model_rollouts = cast(sa.Table, ModelRolloutRow.__table__)
metadata = Base.metadata

PROJECTION_TABLES = (tenants, tenant_modules, api_keys)
