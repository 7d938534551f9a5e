"""One error hierarchy. Each error carries its HTTP status and a stable machine code,
so the API, the CLI and the pipelines report failures the same way."""

from __future__ import annotations

from typing import Any, ClassVar


class ShironziError(Exception):
    """Base of every error the platform raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            **({"details": self.details} if self.details else {}),
        }


class ConfigurationError(ShironziError):
    status = 500
    code = "configuration_error"


class InvalidInputError(ShironziError):
    status = 422
    code = "invalid_input"


class NotFoundError(ShironziError):
    status = 404
    code = "not_found"


class TenantNotFoundError(NotFoundError):
    code = "tenant_not_found"

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} not found", tenant=tenant)


class TableNotFoundError(NotFoundError):
    code = "table_not_found"


class FeatureNotFoundError(NotFoundError):
    """An unknown feature view or feature name (feature store)."""

    code = "feature_not_found"


class CustomerNotFoundError(NotFoundError):
    """No row for this customer in the caller's tenant (another tenant's customer is not found either)."""

    code = "customer_not_found"


class ExportNotFoundError(NotFoundError):
    """No export with that id for this tenant (another tenant's export id is not found either)."""

    code = "export_not_found"


class ConflictError(ShironziError):
    status = 409
    code = "conflict"


class DuplicateSlugError(ConflictError):
    code = "duplicate_slug"


class InvalidStateError(ConflictError):
    code = "invalid_state"


class ModuleDependencyError(ConflictError):
    code = "module_dependency"


class AuthenticationError(ShironziError):
    status = 401
    code = "unauthenticated"


class MalformedKeyError(AuthenticationError):
    code = "malformed_key"


class InvalidKeyError(AuthenticationError):
    code = "invalid_key"


class RevokedKeyError(AuthenticationError):
    code = "key_revoked"


class ExpiredKeyError(AuthenticationError):
    code = "key_expired"


class PermissionDeniedError(ShironziError):
    status = 403
    code = "permission_denied"


class ScopeDeniedError(PermissionDeniedError):
    code = "scope_denied"


class TenantSuspendedError(PermissionDeniedError):
    code = "tenant_suspended"


class TenantInactiveError(PermissionDeniedError):
    """The tenant is offboarding or deleted: its keys no longer authenticate."""

    code = "tenant_inactive"


class ModuleDisabledError(PermissionDeniedError):
    code = "module_disabled"

    def __init__(self, tenant: str, module: str) -> None:
        super().__init__(f"module {module!r} is disabled for tenant {tenant!r}", tenant=tenant, module=module)
        self.module = module


class QuotaExceededError(PermissionDeniedError):
    """The tenant's plan does not allow this much (an export's rows, say); retrying does not help."""

    code = "quota_exceeded"


class RateLimitedError(ShironziError):
    status = 429
    code = "rate_limited"


class IngestQuotaExceededError(RateLimitedError):
    """A tenant is above its plan's ingest rate (`shironzi.tenancy.quotas`): retry after `retry_after` s."""

    code = "ingest_quota_exceeded"


class ServiceUnavailableError(ShironziError):
    status = 503
    code = "service_unavailable"


class DataQualityError(ShironziError):
    status = 422
    code = "data_quality_failed"


class CommitConflictError(ConflictError):
    code = "commit_conflict"


class LakeError(ShironziError):
    """A Delta Lake operation failed for a reason other than bad input or a conflict (storage, log)."""

    status = 500
    code = "lake_error"


class TransformationError(ShironziError):
    """A curated-layer build (dbt) failed: a model errored or a data test found bad rows."""

    status = 500
    code = "transformation_failed"


class IntegrityCheckError(ShironziError):
    """A tamper-evidence or erasure check failed: a broken audit hash chain, a forged or failing receipt."""

    status = 422
    code = "integrity_check_failed"


class KeyDestroyedError(ShironziError):
    """A tenant's encryption key was destroyed (crypto-shredded): data under it can no longer be read."""

    status = 410
    code = "key_destroyed"


class LeaseBusyError(ConflictError):
    """A table lease (erasure vs. writers) could not be taken in time."""

    code = "lease_busy"


class KeyInQueryError(AuthenticationError):
    """An API key was sent in the query string (it would end up in logs and caches): refused."""

    code = "key_in_query"


class PayloadTooLargeError(ShironziError):
    """A request body is larger than the API accepts."""

    status = 413
    code = "payload_too_large"


class InvalidJsonError(ShironziError):
    """A request body that is not valid JSON."""

    status = 400
    code = "invalid_json"


class RegistryUnavailableError(ServiceUnavailableError):
    """The tenant registry's database cannot be reached (down, restarting, failing over): retry shortly."""

    code = "registry_unavailable"


class ModelUnavailableError(ServiceUnavailableError):
    """No champion model could be loaded for serving (none trained or promoted yet, or the registry is down)."""

    code = "model_unavailable"


class ModelTrainingError(ShironziError):
    """A model could not be trained: no labels or features for the eligible tenants, or a degenerate split."""

    status = 422
    code = "model_training_failed"


class ModelNotFoundError(NotFoundError):
    """A registered model, version or alias does not exist in the MLflow registry."""

    code = "model_not_found"


class OrchestrationError(ShironziError):
    """An Airflow command or DAG run failed (`shironzi airflow ...`)."""

    status = 500
    code = "orchestration_failed"


class StreamLagError(ShironziError):
    """A stream ingestor is dead and could not be restarted, or lags more than the allowed threshold."""

    status = 503
    code = "stream_lag_exceeded"


class FencedError(ConflictError):
    """A writer's region epoch changed (failover or failback): its commit is refused."""

    code = "fenced"


class ResidencyError(PermissionDeniedError):
    """Data of a residency-restricted tenant would leave its jurisdiction."""

    code = "residency_violation"


class ReplicationDivergedError(ConflictError):
    """A replica holds a different commit at a version the source also has."""

    code = "replication_diverged"
