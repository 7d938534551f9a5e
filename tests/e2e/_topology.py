"""The production topology's settings per role: which environment variables each server process gets.

`tests/e2e/test_production_topology.py` starts every role as its own process and builds each process's
environment with `role_env`, from exactly these names; the deployment files (docker-compose.yml, deploy/k8s)
are checked against the same dict, so the tested topology and the shipped one cannot drift apart.

Roles: `api` (uvicorn, 2 workers), `dashboard` (Streamlit), `mlflow` (the tracking server: PostgreSQL backend,
S3 artifact store, artifacts proxied so clients need no object-store credentials), `stream_ingestor`
(`shironzi ingest stream`), `airflow` (the process that runs the pipeline stages: provisioning, batch
landing, dbt, features, training, scoring, erasure) and `spark` (the standalone Sail Spark Connect server,
which reads the S3 lake with the `AWS_*` variables of its own environment).
"""

from __future__ import annotations

from collections.abc import Mapping

# Every platform process: the registry, the lake on the object store, the shared keystore and secrets.
_PLATFORM = frozenset({
    "SHIRONZI_HOME",
    "SHIRONZI_DATABASE_URL",
    "SHIRONZI_LAKE_URI",
    "SHIRONZI_STORAGE_OPTIONS",
    "SHIRONZI_SECRETS_URL",
    "SHIRONZI_MASTER_KEY",
    "SHIRONZI_PLATFORM_KEY",
})

# The object store's endpoint and credentials as the AWS SDK / object_store read them.
_OBJECT_STORE = frozenset({
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ALLOW_HTTP",
})

ROLE_SETTINGS: dict[str, frozenset[str]] = {
    "api": _PLATFORM | {
        "SHIRONZI_REDIS_URL",
        "SHIRONZI_ONLINE_STORE_URL",
        "SHIRONZI_KAFKA_BOOTSTRAP",
        "MLFLOW_TRACKING_URI",
    },
    "dashboard": _PLATFORM | {
        "SHIRONZI_REDIS_URL",
        "MLFLOW_TRACKING_URI",
    },
    "mlflow": frozenset({
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    }),
    "stream_ingestor": _PLATFORM | {
        "SHIRONZI_KAFKA_BOOTSTRAP",
        "SHIRONZI_REDIS_URL",
    },
    "airflow": _PLATFORM | {
        "SHIRONZI_KAFKA_BOOTSTRAP",
        "SHIRONZI_SPARK_REMOTE",
        "SHIRONZI_REDIS_URL",
        "SHIRONZI_ONLINE_STORE_URL",
        "MLFLOW_TRACKING_URI",
    },
    "spark": _OBJECT_STORE,
}


def role_env(role: str, values: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `role`'s process: `base` (PATH and the like) without any SHIRONZI_/MLFLOW_/AWS_
    variable, plus exactly the role's settings taken from `values` (every one must be given)."""
    names = ROLE_SETTINGS[role]
    missing = sorted(names - set(values))
    if missing:
        raise KeyError(f"{role}: no value for {missing}")
    env = {k: v for k, v in (base or {}).items() if not k.startswith(("SHIRONZI_", "MLFLOW_", "AWS_"))}
    env.update({name: values[name] for name in names})
    return env
