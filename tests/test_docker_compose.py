"""docker-compose.yml is for users' deployments: validate its shape without a Docker engine."""

from __future__ import annotations

from pathlib import Path

import yaml

from shironzi.settings import Settings

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_declares_the_production_backends() -> None:
    services = _compose()["services"]
    for name in ("postgres", "kafka", "redis", "minio"):
        assert name in services, name
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller", "Kafka must run in KRaft mode"


def test_compose_configures_shironzi_only_through_known_settings() -> None:
    env = _compose()["x-shironzi-env"]
    known = {f"SHIRONZI_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("SHIRONZI_") and k not in known}
    assert not unknown, f"compose sets settings that do not exist: {unknown}"
    assert env["SHIRONZI_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["SHIRONZI_ENV"] == "prod"


def test_every_depends_on_points_at_a_declared_service() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        deps = spec.get("depends_on", [])
        for dep in (deps if isinstance(deps, list) else deps.keys()):
            assert dep in services, f"{name} depends on undeclared {dep}"


def test_compose_runs_airflow_on_its_own_postgres_with_the_shironzi_settings() -> None:
    compose = _compose()
    services = compose["services"]
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-postgres"):
        assert name in services, name
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert "@airflow-postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/orchestration/dags"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    # The DAGs read the same settings as every other Shironzi service (the YAML anchor is merged in).
    assert env["SHIRONZI_DATABASE_URL"] == compose["x-shironzi-env"]["SHIRONZI_DATABASE_URL"]
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor"):
        assert services[name]["environment"] == env
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]
