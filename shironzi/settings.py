"""The one settings object. Every backend is chosen by a URL; embedded defaults live under `home`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shironzi.errors import ConfigurationError

PLACEHOLDER_SECRETS = frozenset({"", "changethis", "change-me", "dev-master-key", "dev-platform-key"})
DEV_MASTER_KEY = "dev-master-key"
DEV_PLATFORM_KEY = "dev-platform-key"


class SqlSource(BaseModel):
    """One SQL table (or query) that the ingest_batch DAG loads incrementally by a watermark column."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Keys the watermark; stable across runs.")
    url: str = Field(min_length=1, description="SQLAlchemy URL of the source database.")
    table: str | None = None
    query: str | None = None
    watermark: str = Field(min_length=1, description="Incremental column (integer or timestamp).")

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ConfigurationError(f"SQL source {self.name!r}: give exactly one of table or query")
        return self


class RegionLake(BaseModel):
    """One region's own lake (a bucket per region, or a folder per region) and its broker."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, description="The region's lake root: a local path or s3://, abfss://, gs:// URI.")
    storage_options: dict[str, str] = Field(default_factory=dict, description="delta-rs storage_options.")
    kafka_bootstrap: str | None = Field(None, description="The region's own broker. Default: SHIRONZI_KAFKA_BOOTSTRAP.")


class PlanCost(BaseModel):
    """The cost model of one plan (`SHIRONZI_PLAN_COSTS`): what the tenant pays a month, and what serving it
    costs the platform per million events landed, per GB-month stored and per thousand API calls."""

    model_config = ConfigDict(extra="forbid")

    plan_price: float = Field(ge=0, description="Monthly price the tenant pays for the plan.")
    per_million_events: float = Field(ge=0, description="Platform cost per million events landed.")
    per_gb_month: float = Field(ge=0, description="Platform cost per GB stored for a month (all layers).")
    per_thousand_api_calls: float = Field(ge=0, description="Platform cost per thousand API requests.")


def _default_plan_costs() -> dict[str, PlanCost]:
    return {
        "free": PlanCost(plan_price=0.0, per_million_events=2.0, per_gb_month=0.05, per_thousand_api_calls=0.02),
        "standard": PlanCost(plan_price=499.0, per_million_events=1.5, per_gb_month=0.04,
                             per_thousand_api_calls=0.015),
        "enterprise": PlanCost(plan_price=4999.0, per_million_events=1.0, per_gb_month=0.06,
                               per_thousand_api_calls=0.01),
    }


class PlanQuotaOverride(BaseModel):
    """The fields of one plan's quota that `SHIRONZI_PLAN_QUOTAS` overrides (`shironzi.tenancy.catalog.PLAN_QUOTAS`
    holds the defaults; the plans are the catalogue's, which tests/shironzi/tenancy checks)."""

    model_config = ConfigDict(extra="forbid")

    ingest_rate: float | None = Field(None, gt=0, description="Events/s per tenant.")
    ingest_burst: float | None = Field(None, gt=0, description="Events the token bucket holds.")
    storage_gb: float | None = Field(None, gt=0, description="Lake storage per tenant (GB).")


class Settings(BaseSettings):
    """Typed configuration read from `SHIRONZI_*` environment variables (and `.env`)."""

    model_config = SettingsConfigDict(env_prefix="SHIRONZI_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "prod"] = Field(
        "dev", description="Deployment environment; prod refuses placeholder secrets."
    )
    home: Path = Field(
        Path(".shironzi"),
        description="Root for every embedded default (registry, lake, broker, MLflow, keystore).",
    )
    database_url: str | None = Field(
        None,
        description="Tenant registry and platform metadata (SQLAlchemy URL). Default: SQLite under home.",
    )
    lake_uri: str | None = Field(
        None, description="Delta Lake root: a local path or s3://, abfss://, gs:// URI. Default: home/lake."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="delta-rs storage_options for object-store lakes (JSON). Concurrent S3 commits are safe "
        "through delta-rs's conditional put (If-None-Match): no AWS_S3_ALLOW_UNSAFE_RENAME.",
    )
    kafka_bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers. Default: the bundled broker started by `shironzi broker start`.",
    )
    kafka_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Kafka client properties (JSON object of librdkafka names: security.protocol, sasl.mechanism, "
        "sasl.username, sasl.password, ssl.ca.location, client.id, ...) for every producer, consumer and admin "
        "client; confluent-kafka takes them as they are, kafka-python translated.",
    )
    spark_remote: str | None = Field(
        None, description="Spark Connect URL (sc://host:15002). Default: an embedded Sail server."
    )
    dbt_target: str = Field(
        "duckdb",
        description="dbt target of the curated layer: duckdb (embedded) or spark (dbt-spark over Spark Connect).",
    )
    online_store_url: str | None = Field(
        None,
        description="Online feature store: sqlite:///path or redis://host:port/db. Default: SQLite under home.",
    )
    redis_url: str | None = Field(
        None, description="Redis for shared rate limits and caches. Default: none (in-process)."
    )
    secrets_url: str | None = Field(
        None,
        description="Tenant keys: file://path (local keystore) or vault+https://host. Default: keystore under home.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "SHIRONZI_MLFLOW_TRACKING_URI"),
        description="MLflow tracking server or database. Default: SQLite under home with local artifacts.",
    )
    airflow_sql_alchemy_conn: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "SHIRONZI_AIRFLOW_SQL_ALCHEMY_CONN"
        ),
        description="Airflow metadata database. Default: SQLite under home/airflow.",
    )
    master_key: SecretStr = Field(
        SecretStr(DEV_MASTER_KEY), description="Encrypts the local keystore. Must be set outside dev."
    )
    previous_master_key: SecretStr | None = Field(
        None,
        description="During a master key rotation: the retiring master key, so keys still wrapped under it "
        "stay readable (`shironzi keys rotate-master`). Unset once the rotation has finished.",
    )
    platform_key: SecretStr = Field(
        SecretStr(DEV_PLATFORM_KEY), description="Signs erasure receipts (HMAC). Must be set outside dev."
    )
    regions: list[str] = Field(
        default_factory=lambda: ["eu-west", "us-east", "ap-south"],
        description="Regions a tenant may be placed in.",
    )
    default_region: str = Field("eu-west", description="Region for tenants created without one.")
    region_lakes: dict[str, RegionLake] = Field(
        default_factory=dict,
        description="Regions as failure domains (JSON: region -> {uri, storage_options, kafka_bootstrap}). A region "
        "not listed keeps its folder `{lake}/{region}` under SHIRONZI_LAKE_URI.",
    )
    region_peers: dict[str, str] = Field(
        default_factory=lambda: {"eu-west": "us-east", "us-east": "eu-west", "ap-south": "eu-west"},
        description="DR: the region that holds each region's replica and takes over its tenants on failover.",
    )
    region_jurisdictions: dict[str, str] = Field(
        default_factory=lambda: {"eu-west": "eu", "us-east": "us", "ap-south": "in"},
        description="DR: the jurisdiction of each region; residency-restricted plans never leave theirs.",
    )
    residency_plans: list[str] = Field(
        default_factory=lambda: ["healthcare/enterprise"],
        description="DR: residency-restricted plans, as `industry/plan` (or a bare plan for every industry). Their "
        "tenants have no replica outside their home region's jurisdiction.",
    )
    dr_replicate_interval_seconds: float = Field(
        1.0, gt=0, le=3600, description="DR: pause between passes of the continuous `dr replicate` loop."
    )
    dr_failback_max_lag_versions: int = Field(
        50, ge=0,
        description="DR: failback is refused (unless --force) while a table of the region lags by more versions.",
    )
    dr_state_cache_seconds: float = Field(
        2.0, ge=0, le=60, description="DR: how long a process caches the region states it routes lake paths by."
    )
    writer_region: str | None = Field(
        None,
        description="DR fencing: the region this process writes for. Its first lake commit records the region's "
        "epoch; every later commit is refused once a failover or failback changes it.",
    )
    key_cache_ttl_seconds: float = Field(
        30.0, ge=0, le=60, description="API-key lookup cache TTL; a revocation takes effect within it."
    )
    module_cache_ttl_seconds: float = Field(
        30.0, ge=0, le=300, description="Module-toggle cache TTL for is_enabled()."
    )
    require_services: bool = Field(
        False, description="Tests: fail instead of skip when a service binary is missing (CI sets 1)."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="Structured log line format for stage summaries."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    audit_flush_events: int = Field(
        500, ge=1, le=100_000, description="Audit writer: flush the buffer after this many events."
    )
    audit_flush_seconds: float = Field(
        1.0, gt=0, le=300, description="Audit writer: flush buffered events at least this often (seconds)."
    )
    audit_digest_uri: str | None = Field(
        None,
        description="Where the signed audit digests go, apart from the lake: a local path or s3:// URI (production: "
        "a separate bucket or prefix under object lock). Default: home/audit-digests.",
    )
    audit_digest_grace_seconds: float = Field(
        300.0, ge=0, le=86_400,
        description="Audit digests: an hour is digested only this long after it ends, so late flushes land first.",
    )
    retention_confirm_share: float = Field(
        0.2, gt=0, le=1,
        description="Retention: an enforcement that would delete more than this share of any tenant's rows "
        "in a table stops before deleting anything and needs --confirm.",
    )
    lease_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="How long erasure, vacuum and writers wait for a table lease before giving up (lease_busy). "
        "Leases live in the registry database: PostgreSQL advisory locks, or flock files with SQLite.",
    )
    landing_dir: Path | None = Field(
        None, description="Landing directory the hourly ingest_batch DAG lands files from. Default: home/landing."
    )
    sql_sources: list[SqlSource] = Field(
        default_factory=list,
        description="SQL tables ingest_batch loads incrementally (JSON list: name, url, table|query, watermark).",
    )
    stream_max_lag: int = Field(
        100_000, ge=0, description="stream_supervisor alerts when an ingestor is this many records behind."
    )
    stream_tenant_refresh_seconds: float = Field(
        30.0, gt=0, le=3600,
        description="Stream ingestor: how often it re-reads the tenant directory (retrying an unreachable registry).",
    )
    placement_policy_file: Path | None = Field(
        None, description="YAML placement policy (promotion/demotion thresholds, moves per run; see "
        "shironzi.tenancy.placement_policy). Default: the built-in policy.",
    )
    stream_backoff_max_seconds: float = Field(
        30.0, gt=0, le=600,
        description="Stream ingestor: longest wait between retries while the lake's object store fails "
        "(exponential from 0.5 s; nothing is committed meanwhile).",
    )
    health_port: int | None = Field(
        None, ge=0, le=65535,
        description="Stream ingestor: port of its /healthz endpoint for liveness probes. Default: none.",
    )
    health_stale_seconds: float = Field(
        120.0, gt=0, description="/healthz of a long-running process answers 503 after this long without progress."
    )
    score_chunk_rows: int = Field(
        100_000, ge=1, le=10_000_000,
        description="Most customers to score per mapped score_batch task: tenants are packed by their rows, so the "
        "task count follows the data (a tenant with more rows is a task of its own).",
    )
    score_chunk_tenants: int = Field(
        25_000, ge=1, le=100_000, description="Most tenants per mapped score_batch task (bounds a task's keyed "
        "registry reads; 100,000 tiny tenants -> 4 tasks).",
    )
    dbt_dedicated_batch_tenants: int = Field(
        25, ge=1, le=10_000,
        description="dbt_build: dedicated tenants per mapped build task (1,000 dedicated tenants -> 40 tasks).",
    )
    dashboard_cache_ttl_seconds: float = Field(
        60.0, ge=0, le=3600, description="Dashboards: how long a lake read stays cached (seconds)."
    )
    api_max_body_bytes: int = Field(
        1_048_576, ge=1024, le=64 * 1_048_576, description="API: largest accepted request body (bytes)."
    )
    api_events_topic: str = Field("events", description="API: Kafka topic that POST /v1/events produces to.")
    api_rate_limits: dict[str, float] = Field(
        default_factory=lambda: {"free": 10.0, "standard": 100.0, "enterprise": 5000.0},
        description="API: requests per second per tenant by plan (token bucket, burst = 2 s of rate).",
    )
    ingest_quotas: bool = Field(
        False,
        description="Quotas: enforce the plans' ingest quotas (the stream ingestor quarantines the excess as "
        "quota_exceeded, POST /v1/events answers 429). The deploy files switch it on; off, nothing is limited.",
    )
    plan_quotas: dict[Literal["free", "standard", "enterprise"], PlanQuotaOverride] = Field(
        default_factory=dict,
        description="Quotas: per-plan overrides of the catalogue's quotas (JSON, e.g. {\"free\": {\"ingest_rate\": "
        "100, \"ingest_burst\": 1000, \"storage_gb\": 5}}): ingest events/s per tenant, its burst, storage GB.",
    )
    api_breaker_failures: int = Field(
        3, ge=1, le=100,
        description="API: consecutive failures of the online store or the broker that open its circuit breaker.",
    )
    api_breaker_cooldown_seconds: float = Field(
        10.0, gt=0, le=600, description="API: how long an open circuit breaker refuses calls before one trial call.",
    )
    api_model_refresh_seconds: float = Field(
        10.0, gt=0, le=30, description="API: how often each worker checks whether the champion alias moved."
    )
    export_expiry_days: int = Field(
        7, ge=1, le=90, description="Exports: days a finished export's file stays downloadable before the sweep."
    )
    export_presign_seconds: int = Field(
        900, ge=60, le=7 * 24 * 3600, description="Exports: lifetime of a pre-signed object-store download URL."
    )
    model_promotion_margin: float = Field(
        0.002, ge=0, le=1,
        description="Models: a challenger must beat the champion's holdout metric by this much to be promoted.",
    )
    model_bucket_tolerance: float = Field(
        0.02, ge=0, le=1,
        description="Models: the most a challenger may lose on any tenant-size bucket and still be promoted.",
    )
    release_waves: list[str] = Field(
        default_factory=lambda: ["canary", "10", "50", "100"],
        description="Releases: a rollout's waves in order: `canary` (the canary-channel tenants), then cumulative "
        "percentages of the stable tenants, the last 100.",
    )
    release_wave_soak_seconds: float = Field(
        0.0, ge=0, le=7 * 86400,
        description="Releases: how long a wave serves the candidate before its canary analysis may judge it.",
    )
    release_max_psi: float = Field(
        0.2, gt=0, le=10,
        description="Releases: the most a wave's prediction distribution may shift (PSI, candidate vs baseline).",
    )
    release_max_brier_increase: float = Field(
        0.01, ge=0, le=1,
        description="Releases: the most the candidate's Brier score may exceed the baseline's on matured labels.",
    )
    release_max_ece_increase: float = Field(
        0.03, ge=0, le=1,
        description="Releases: the most the candidate's expected calibration error may exceed the baseline's.",
    )
    release_max_error_rate_increase: float = Field(
        0.01, ge=0, le=1,
        description="Releases: the most the candidate's API error rate may exceed the baseline's.",
    )
    release_max_latency_ratio: float = Field(
        1.5, ge=1, le=100,
        description="Releases: the most the candidate's API p99 latency may be, as a multiple of the baseline's.",
    )
    release_metrics_url: str | None = Field(
        None, description="Releases: an API worker's /metrics URL, read for the analysis's error rate and latency "
        "per model version (unset: those two checks report no data).",
    )
    model_dedicated_min_rows: int = Field(
        20_000, ge=100,
        description="Models: training rows a tenant needs before it gets a dedicated churn model candidate.",
    )
    model_max_training_rows: int = Field(
        2_000_000, ge=1_000,
        description="Models: most training rows held in memory. Churn samples labelled snapshots, stratified by "
        "tenant size bucket and label; trend samples whole tenants' series, stratified by size bucket.",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Webhooks: how long one delivery attempt waits for the receiver (seconds)."
    )
    webhook_backoff_seconds: float = Field(
        30.0, gt=0, le=3600,
        description="Webhooks: wait before the first retry; each further retry waits twice as long (capped at 1 h).",
    )
    webhook_retry_window_seconds: float = Field(
        86_400.0, gt=0, le=7 * 86_400,
        description="Webhooks: a delivery still failing this long after it was queued goes to the dead letters.",
    )
    alert_webhook_urls: list[str] = Field(
        default_factory=list,
        description="Alerts: Alertmanager-compatible webhook receivers (JSON list of URLs) that get every alert.",
    )
    plan_costs: dict[str, PlanCost] = Field(
        default_factory=_default_plan_costs,
        description="Usage: the cost model per plan (JSON {plan: {plan_price, per_million_events, per_gb_month, "
        "per_thousand_api_calls}}), for each tenant's monthly cost and the platform's margin.",
    )
    usage_stage_log: bool = Field(
        True, description="Usage: record each pipeline stage's rows and seconds in `_platform/metering/stage_runs`."
    )
    usage_flush_seconds: float = Field(
        60.0, gt=0, le=3600,
        description="Usage: how often a process writes its buffered API request counts and frequent stage runs "
        "(stream flushes) to the lake.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "SHIRONZI_OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OpenTelemetry OTLP/HTTP endpoint for API and pipeline traces. Default: none (tracing off).",
    )
    monitor_url: str | None = Field(
        None,
        description="Monitoring: the `shironzi monitor serve` process (http://host:port) that batch stages push "
        "their metrics to and `monitor status` reads. Default: none (no push).",
    )
    pushgateway_url: str | None = Field(
        None, description="Monitoring: a Prometheus Pushgateway that batch stages push to instead of the monitor."
    )
    monitor_lake_scan_seconds: float = Field(
        300.0, gt=0, description="Monitoring: how often the monitor process re-reads table versions and file counts."
    )
    prometheus_multiproc_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR"),  # prometheus_client reads this one at import
        description="prometheus_client multiprocess mode: the directory every API worker writes its metrics to, so "
        "/metrics covers all workers. `serve api --workers N` sets one under home when unset.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("kafka_config")
    @classmethod
    def _kafka_properties_are_flat(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, item in value.items():
            if not isinstance(item, str | int | float | bool) or item is None:
                raise ConfigurationError(
                    f"SHIRONZI_KAFKA_CONFIG: {name} must be a string, number or boolean, got {type(item).__name__}"
                )
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env == "prod":
            for name in ("master_key", "platform_key"):
                if getattr(self, name).get_secret_value() in PLACEHOLDER_SECRETS:
                    raise ConfigurationError(
                        f"SHIRONZI_{name.upper()} must be set to a real secret when SHIRONZI_ENV=prod"
                    )
        unknown = sorted(set(self.region_lakes) - set(self.regions))
        if unknown:
            raise ConfigurationError(f"SHIRONZI_REGION_LAKES: unknown region(s) {unknown}; regions are {self.regions}")
        if self.default_region not in self.regions:
            raise ConfigurationError(
                f"default_region {self.default_region!r} is not in regions {self.regions}"
            )
        return self

    # Resolved URLs: the embedded default when nothing is configured.
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def resolved_lake_uri(self) -> str:
        return (self.lake_uri or str(self.home / "lake")).rstrip("/")

    @property
    def resolved_audit_digest_uri(self) -> str:
        return (self.audit_digest_uri or str(self.home / "audit-digests")).rstrip("/")

    @property
    def resolved_online_store_url(self) -> str:
        return self.online_store_url or f"sqlite:///{self.home / 'online.db'}"

    @property
    def resolved_secrets_url(self) -> str:
        return self.secrets_url or f"file://{self.home / 'keystore'}"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def resolved_landing_dir(self) -> Path:
        return (self.landing_dir or self.home / "landing").expanduser().resolve()

    @property
    def resolved_airflow_sql_alchemy_conn(self) -> str:
        return self.airflow_sql_alchemy_conn or f"sqlite:///{self.home / 'airflow' / 'airflow.db'}"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; call `get_settings.cache_clear()` after changing the environment."""
    return Settings()
