"""What the deployment checks share: which compose services and Kubernetes workloads play each role of the
production topology (tests/e2e/_topology.py), and the settings every Shironzi process must get."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"

AIRFLOW_SERVICES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")

# Each role of the topology -> the compose services (and Kubernetes workloads, named alike) that run it.
ROLE_SERVICES: dict[str, tuple[str, ...]] = {
    "api": ("api",),
    "dashboard": ("dashboard",),
    "mlflow": ("mlflow",),
    "stream_ingestor": ("ingest-stream",),
    "airflow": AIRFLOW_SERVICES,
    "spark": ("spark-connect",),
}

# Every service that runs Shironzi code (and so reads the SHIRONZI_* settings).
PLATFORM_SERVICES = ("migrate", "api", "dashboard", "ingest-stream", "airflow-init", *AIRFLOW_SERVICES)

# Shared state lives in PostgreSQL, the object store or Vault: never a file or SQLite database in a container.
SHARED_STATE_PREFIXES = {
    "SHIRONZI_DATABASE_URL": "postgresql+psycopg://",
    "SHIRONZI_LAKE_URI": "s3://",
    "SHIRONZI_SECRETS_URL": "vault+",
    "MLFLOW_TRACKING_URI": "http://",
    "SHIRONZI_REDIS_URL": "redis://",
    "SHIRONZI_ONLINE_STORE_URL": "redis://",
    "SHIRONZI_SPARK_REMOTE": "sc://",
}

UNSAFE_RENAME = "AWS_S3_ALLOW_UNSAFE_RENAME"
