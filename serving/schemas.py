"""Request and response bodies of the API: `XCreate` for inputs, `XUpdate` for changes, `XPublic` for outputs."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shironzi.exports.jobs import ExportFormat, ExportTableName
from shironzi.tenancy.catalog import Industry, Module, Placement, Plan, Scope, Status

MAX_BATCH_CUSTOMERS = 1000
MAX_EVENTS_PER_REQUEST = 1000
CustomerId = str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors ------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine code, e.g. `module_disabled`, `rate_limited`.")
    message: str = Field(description="What went wrong, for a human.")
    request_id: str = Field(description="The request's id (also in the `X-Request-ID` header).")
    details: dict[str, Any] | None = Field(None, description="Structured context (field, module, ...).")


class ErrorResponse(BaseModel):
    """The one error shape of the API."""

    error: ErrorBody


# --- churn -------------------------------------------------------------------------------------------


class ReasonPublic(BaseModel):
    feature: str
    label: str
    contribution: float


class ChurnPublic(BaseModel):
    customer_id: str
    churn_probability: float = Field(ge=0, le=1)
    risk_band: Literal["low", "medium", "high"]
    top_reasons: list[ReasonPublic]
    model_name: str
    model_version: str
    source: Literal["live", "batch"]
    feature_timestamp: datetime | None = None
    score_date: date | None = None


class ChurnBatchCreate(_Strict):
    customer_ids: list[CustomerId] = Field(min_length=1, max_length=MAX_BATCH_CUSTOMERS)
    source: Literal["live", "batch"] = "live"


class ChurnBatchPublic(BaseModel):
    results: list[ChurnPublic]
    not_found: list[str] = Field(description="Requested ids this tenant has no features (or scores) for.")


# --- forecasts ---------------------------------------------------------------------------------------


class ForecastPointPublic(BaseModel):
    forecast_date: date
    horizon_day: int
    yhat: float
    yhat_lower: float
    yhat_upper: float


class ForecastPublic(BaseModel):
    kpi: Literal["active_customers", "revenue"]
    generated_date: date
    model_name: str
    model_version: str
    interval_level: float = Field(0.8, description="Coverage of the points' intervals (the tenant's "
                                  "trend_forecast setting).")
    points: list[ForecastPointPublic]


# --- features ----------------------------------------------------------------------------------------


class FeaturesPublic(BaseModel):
    customer_id: str
    features: dict[str, float | int | str | bool | None]


# --- events ------------------------------------------------------------------------------------------


class EventsCreate(BaseModel):
    """Events for the caller's tenant; each is checked against the tenant's industry contract."""

    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class EventOutcome(BaseModel):
    index: int
    event_id: str | None
    accepted: bool
    reason_code: str | None = None
    reason: str | None = None


class EventsAccepted(BaseModel):
    accepted: int
    rejected: int
    topic: str
    results: list[EventOutcome]


# --- tenants -----------------------------------------------------------------------------------------


class MeteredUsagePublic(BaseModel):
    """Metered usage over a range of days (`_platform/usage`): sums, and the newest day's stored bytes."""

    start: date
    end: date
    days_metered: int
    events_landed: int
    bytes_total: int
    api_requests: int
    compute_seconds: float


class UsagePublic(BaseModel):
    requests_today: int
    rate_limit_per_second: float
    active_keys: int
    month_to_date: MeteredUsagePublic


class MonthCostPublic(BaseModel):
    """One calendar month of a tenant: usage, the platform's cost of it by the plan's unit prices, the margin."""

    month: str
    plan: Plan
    events_landed: int
    gb_month: float
    api_requests: int
    compute_seconds: float
    cost_events: float
    cost_storage: float
    cost_api: float
    cost: float
    plan_price: float
    margin: float


class TenantUsagePublic(BaseModel):
    tenant_id: str
    slug: str
    plan: Plan
    start: date
    end: date
    days_metered: int
    totals: dict[str, float]
    months: list[MonthCostPublic]
    daily: list[dict[str, Any]]


class TenantPublic(BaseModel):
    id: str
    slug: str
    name: str
    industry: Industry
    region: str
    plan: Plan
    placement: Placement
    status: Status
    modules: list[Module]
    created_at: datetime
    updated_at: datetime
    channel: str = Field("stable", description="Release channel: stable, canary or pinned:<model>@<version>.")


class OwnTenantPublic(TenantPublic):
    usage: UsagePublic


class TenantCreate(_Strict):
    slug: str = Field(min_length=3, max_length=63)
    name: str = Field(min_length=1, max_length=200)
    industry: Industry
    region: str | None = None
    plan: Plan = "standard"
    placement: Placement | None = None


class TenantCreated(BaseModel):
    tenant: TenantPublic
    api_key: str = Field(description="The tenant's first API key (scopes read, write, admin); shown once.")


class TenantUpdate(_Strict):
    plan: Plan


class TenantStatusChange(_Strict):
    reason: str | None = Field(None, max_length=500)


class TenantsPage(BaseModel):
    items: list[TenantPublic]
    total: int
    limit: int
    offset: int


class ModulesPublic(BaseModel):
    tenant_id: str
    modules: list[Module]
    settings: ModuleSettingsPublic | None = Field(None, description="The module's settings, when a body set them.")


# --- module settings and webhooks ---------------------------------------------------------------------


class ModuleSettingsPublic(BaseModel):
    tenant_id: str
    module: str
    version: int = Field(description="How many times the tenant's settings of this module changed.")
    settings: dict[str, Any] = Field(description="Every setting, defaults included.")
    overrides: dict[str, Any] = Field(description="The settings that differ from their defaults.")
    tenant_editable: list[str]
    json_schema: dict[str, Any] = Field(description="The module's settings schema (`x-tenant-editable` marks "
                                        "what tenants may change).")


# --- exports (data_export) --------------------------------------------------------------------------


class ExportCreate(_Strict):
    table: ExportTableName = Field(description="A gold mart or predictions table of the caller's own rows.")
    start: date = Field(description="First day of the range (inclusive), on the table's date column.")
    end: date = Field(description="Last day of the range (inclusive).")
    format: ExportFormat = Field("parquet", description="parquet or csv (the tenant's data_export settings "
                                 "say which are allowed).")


class ExportPublic(BaseModel):
    id: str
    table: str
    format: str
    start: date
    end: date
    status: Literal["queued", "running", "ready", "failed", "expired"]
    rows: int | None = Field(None, description="Rows in the file (once ready).")
    size_bytes: int | None = Field(None, description="Size of the file (once ready).")
    error: str | None = Field(None, description="Why the export failed.")
    created_at: datetime
    finished_at: datetime | None = None
    expires_at: datetime = Field(description="When the file is deleted.")
    download: str | None = Field(None, description="Where to download the file (once ready).")


class WebhookDeliveryPublic(BaseModel):
    delivery_id: str
    event_type: str
    url: str
    status: Literal["queued", "retrying", "delivered", "dead"]
    attempts: int
    http_status: int | None
    error: str | None
    created_at: datetime
    attempted_at: datetime | None
    next_attempt_at: datetime | None
    idempotency_key: str
    redelivery_of: str | None


class WebhookDeliveriesPage(BaseModel):
    items: list[WebhookDeliveryPublic]


class WebhookSecretPublic(BaseModel):
    secret: str = Field(description="Verify `Shironzi-Signature: t=...,v1=...` with HMAC-SHA256 over `{t}.{body}`.")


# --- keys --------------------------------------------------------------------------------------------


class KeyCreate(_Strict):
    scopes: list[Scope] = Field(min_length=1, max_length=4)
    expires_at: datetime | None = None
    label: str | None = Field(None, min_length=1, max_length=200)


class KeyPublic(BaseModel):
    prefix: str
    tenant_id: str | None
    scopes: list[Scope]
    label: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyIssued(BaseModel):
    key: KeyPublic
    api_key: str = Field(description="The plaintext key; shown once, stored only as a salted hash.")


# --- models ------------------------------------------------------------------------------------------


class ModelAliasesPublic(BaseModel):
    name: str
    aliases: dict[str, str]


class RollbackPublic(BaseModel):
    name: str
    aliases: dict[str, str]
    detail: str


class ChannelUpdate(_Strict):
    channel: str = Field(..., min_length=1, max_length=200,
                         description="stable, canary or pinned:<model>@<version> (e.g. pinned:churn@3).")


class RolloutCreate(_Strict):
    model: Literal["churn", "trend", "shironzi-churn", "shironzi-trend"]
    version: str = Field(..., pattern=r"^[1-9][0-9]{0,9}$", description="The candidate version.")
    waves: list[str] | None = Field(None, max_length=20,
                                    description="Waves in order, e.g. canary, 10, 50, 100 (default: release_waves).")


class RolloutRollback(_Strict):
    reason: str = Field("rolled back by an operator", min_length=1, max_length=500)


class RolloutWavePublic(BaseModel):
    name: str
    kind: str
    percent: int | None
    state: str
    started_at: str | None
    finished_at: str | None
    analysis: dict[str, Any] | None


class RolloutPublic(BaseModel):
    id: str
    model: str
    candidate: str
    baseline: str
    status: str
    current_wave: int | None
    waves: list[RolloutWavePublic]
    created_at: datetime
    updated_at: datetime
    created_by: str
    reason: str | None


class RolloutsPage(BaseModel):
    items: list[RolloutPublic]


# --- audit -------------------------------------------------------------------------------------------


class ErasureCreate(_Strict):
    tenant_id: str = Field(min_length=1, max_length=100)
    subject_id: str = Field(min_length=1, max_length=200)


class ReceiptPublic(BaseModel):
    request_id: str
    kind: str
    tenant_id: str
    subject_digests: list[str]
    requested_by: str
    created_at: str
    tables: list[dict[str, Any]]
    targets: dict[str, int]
    verification: dict[str, Any]
    artifacts: list[dict[str, Any]] = Field(default_factory=list, description="MLflow artifacts and what was done")
    retraining_queued: list[dict[str, Any]] = Field(default_factory=list)
    signature: str


class ReceiptCheckPublic(BaseModel):
    request_id: str
    ok: bool
    signature_ok: bool
    verification: dict[str, Any]


# --- health ------------------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadinessPublic(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]

ModulesPublic.model_rebuild()
