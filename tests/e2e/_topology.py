"""The production topology's environment contract: for each role, the names of the environment variables the
production-topology test gives that role's server process.

Provisional (issue 18d): the production-topology test (18c) owns this module; docker-compose.yml and
deploy/k8s/ are checked against it (tests/test_docker_compose.py, tests/deploy/test_k8s.py), so a deployment
cannot drift from what the topology test proves.
"""

from __future__ import annotations

# What every Shironzi process reads: registry, lake and its object store, tenant keys, MLflow, Redis, Kafka, Spark.
PLATFORM_SETTINGS = frozenset(
    {
        "SHIRONZI_ENV",
        "SHIRONZI_DATABASE_URL",
        "SHIRONZI_LAKE_URI",
        "SHIRONZI_STORAGE_OPTIONS",
        "SHIRONZI_SECRETS_URL",
        "SHIRONZI_MASTER_KEY",
        "SHIRONZI_PLATFORM_KEY",
        "MLFLOW_TRACKING_URI",
        "SHIRONZI_REDIS_URL",
        "SHIRONZI_ONLINE_STORE_URL",
        "SHIRONZI_KAFKA_BOOTSTRAP",
        "SHIRONZI_SPARK_REMOTE",
    }
)

# The object store as the AWS SDKs and object_store read it (the MLflow server's artifacts, Sail's lake I/O).
OBJECT_STORE_CREDENTIALS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})

ROLE_SETTINGS: dict[str, frozenset[str]] = {
    "api": PLATFORM_SETTINGS,
    "dashboard": PLATFORM_SETTINGS,
    "stream_ingestor": PLATFORM_SETTINGS,
    "airflow": PLATFORM_SETTINGS | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"},
    "mlflow": OBJECT_STORE_CREDENTIALS
    | {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_S3_ENDPOINT_URL"},
    "spark": OBJECT_STORE_CREDENTIALS | {"AWS_ENDPOINT", "AWS_REGION", "AWS_ALLOW_HTTP"},
}
