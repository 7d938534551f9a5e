"""docker-compose.yml is the production topology on one Docker host: validate it without a Docker engine, and
check it against the environment contract of the production-topology test so the two cannot drift apart."""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import yaml

from shironzi.settings import Settings
from tests.deploy._fixtures import (
    AIRFLOW_SERVICES,
    COMPOSE,
    PLATFORM_SERVICES,
    ROLE_SERVICES,
    ROOT,
    SHARED_STATE_PREFIXES,
    UNSAFE_RENAME,
)
from tests.e2e._topology import ROLE_SETTINGS

REQUIRED_SERVICES = (
    "api", "dashboard", "mlflow", "ingest-stream", "spark-connect", *AIRFLOW_SERVICES,
    "postgres", "kafka", "redis", "minio", "minio-init", "vault",
)
JOBS = ("postgres-init", "minio-init", "migrate", "airflow-init")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolated(value: str) -> str:
    """A value with its `${VAR...}` interpolations filled in, as compose does from .env."""
    return re.sub(r"\$\{[^}]*\}", "from-env", value)


def _depends(spec: dict) -> dict:
    deps = spec.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else deps


def test_compose_declares_every_service_of_the_topology() -> None:
    services = _compose()["services"]
    missing = [name for name in REQUIRED_SERVICES if name not in services]
    assert not missing, f"docker-compose.yml lacks {missing}"
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller", "Kafka must run in KRaft mode"
    assert "ZOOKEEPER" not in json.dumps(kafka_env).upper()


def test_compose_configures_shironzi_only_through_known_settings() -> None:
    env = _compose()["x-shironzi-env"]
    known = {f"SHIRONZI_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("SHIRONZI_") and k not in known}
    assert not unknown, f"compose sets settings that do not exist: {unknown}"
    assert env["SHIRONZI_ENV"] == "prod"


def test_no_unsafe_rename_and_commits_use_conditional_puts() -> None:
    compose = _compose()
    assert UNSAFE_RENAME.lower() not in json.dumps(compose).lower(), "no service may commit with unsafe renames"
    options = json.loads(compose["x-shironzi-env"]["SHIRONZI_STORAGE_OPTIONS"])
    assert {k.lower(): v for k, v in options.items()}["aws_conditional_put"] == "etag"
    assert urlparse(options["AWS_ENDPOINT_URL"]).hostname == "minio"


def test_every_platform_service_gets_the_shared_settings() -> None:
    compose = _compose()
    shared, services = compose["x-shironzi-env"], compose["services"]
    for name in PLATFORM_SERVICES:
        env = services[name]["environment"]
        differing = {k for k, v in shared.items() if env.get(k) != v}
        assert not differing, f"{name} does not get the shared settings {sorted(differing)}"
    for key, prefix in SHARED_STATE_PREFIXES.items():
        assert str(shared[key]).startswith(prefix), f"{key}={shared[key]!r}: shared state must not be per-container"


def test_every_role_sets_what_the_topology_test_gives_it() -> None:
    services = _compose()["services"]
    assert set(ROLE_SETTINGS) <= set(ROLE_SERVICES), f"map the roles {set(ROLE_SETTINGS) - set(ROLE_SERVICES)}"
    for role, names in ROLE_SETTINGS.items():
        for service in ROLE_SERVICES[role]:
            missing = names - set(services[service].get("environment", {}))
            assert not missing, f"{service} ({role}) does not set {sorted(missing)}"


def test_every_url_points_at_a_declared_service() -> None:
    compose = _compose()
    services = compose["services"]
    env = compose["x-airflow-env"]
    urls = [v for v in env.values() if re.match(r"^[a-z0-9+]+://", str(v))]
    urls.append(json.loads(env["SHIRONZI_STORAGE_OPTIONS"])["AWS_ENDPOINT_URL"])
    urls += [services["mlflow"]["environment"][k] for k in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_S3_ENDPOINT_URL")]
    for url in urls:
        host = urlparse(_interpolated(url)).hostname
        if url.startswith("s3://"):
            continue  # a bucket, created by minio-init
        assert host in services, f"{url} points at {host}, which is no service"
    host, port = env["SHIRONZI_KAFKA_BOOTSTRAP"].split(":")
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert host in services and f"PLAINTEXT://{host}:{port}" in advertised
    remote = urlparse(env["SHIRONZI_SPARK_REMOTE"])
    assert services["spark-connect"]["command"] == [
        "sail", "spark", "server", "--ip", "0.0.0.0", "--port", str(remote.port)
    ]
    buckets = " ".join(services["minio-init"]["entrypoint"])
    for bucket in (urlparse(env["SHIRONZI_LAKE_URI"]).hostname,
                   urlparse(services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]).hostname):
        assert f"lake/{bucket}" in buckets, f"minio-init does not create the bucket {bucket}"


def test_mlflow_keeps_its_state_in_postgres_and_minio() -> None:
    compose = _compose()
    mlflow = compose["services"]["mlflow"]
    env = mlflow["environment"]
    assert mlflow["command"] == ["mlflow", "server"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://") and "@postgres:5432/mlflow" in env[
        "MLFLOW_BACKEND_STORE_URI"
    ]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    tracking = urlparse(compose["x-shironzi-env"]["MLFLOW_TRACKING_URI"])
    assert tracking.port == int(env["MLFLOW_PORT"])
    # MLflow refuses Host headers it does not know: the name the other services use must be allowed.
    assert tracking.netloc in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_healthchecks_and_dependency_conditions() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        for dep, rule in _depends(spec).items():
            assert dep in services, f"{name} depends on undeclared {dep}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            else:
                assert condition == "service_completed_successfully" and dep in JOBS, (name, dep, condition)
        if name in JOBS:
            assert "restart" not in spec, f"the one-shot job {name} must not restart"
        elif name != "ingest-stream":  # the ingestor serves nothing; Airflow's stream_supervisor watches its lag
            assert "healthcheck" in spec, f"{name} has no healthcheck"
    def waits_for(name: str) -> set[str]:
        direct = set(_depends(services[name]))
        return direct.union(*(waits_for(dep) for dep in direct))

    backends = {"postgres", "minio-init", "vault", "redis", "kafka", "mlflow", "migrate"}
    for name in ("api", "dashboard", "ingest-stream", *AIRFLOW_SERVICES):
        assert backends <= waits_for(name), f"{name} starts before {sorted(backends - waits_for(name))}"


def test_images_are_pinned_and_commands_are_sane() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        assert ("image" in spec) != ("build" in spec), name
        if "image" in spec:
            image, _, tag = spec["image"].partition(":")
            assert tag and tag != "latest", f"{name}: pin {image} to a release"
    assert services["api"]["command"][:3] == ["shironzi", "serve", "api"]
    assert services["api"]["command"][-2:] == ["--workers", "2"]
    assert services["dashboard"]["command"][:3] == ["shironzi", "serve", "dashboard"]
    for name in ("api", "dashboard"):
        assert "0.0.0.0" in services[name]["command"], f"{name} must listen beyond the container"
    assert services["ingest-stream"]["command"][:3] == ["shironzi", "ingest", "stream"]
    assert "--group" in services["ingest-stream"]["command"]


def test_every_interpolated_variable_is_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    listed = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert used <= listed, f"deploy/compose.env.example lacks {sorted(used - listed)}"


def test_compose_runs_airflow_on_the_shared_postgres_with_the_shironzi_settings() -> None:
    compose = _compose()
    services = compose["services"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/orchestration/dags"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"] == env
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    init = services["airflow-init"]["command"]
    assert init[:2] == ["sh", "-c"] and init[2].startswith("airflow db migrate && ")
    assert "airflow pools import /app/orchestration/airflow_config/pools.json" in init[2]  # the DAGs' pools
    assert "airflow" in " ".join(services["postgres-init"]["command"])
