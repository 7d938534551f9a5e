from __future__ import annotations

from pathlib import Path

import pytest

from shironzi.errors import ConfigurationError
from shironzi.settings import Settings, get_settings


def test_embedded_defaults_live_under_home(settings: Settings, home: Path) -> None:
    assert settings.home == home.resolve()
    for url in (settings.resolved_database_url, settings.resolved_lake_uri, settings.resolved_online_store_url,
                settings.resolved_secrets_url, settings.resolved_mlflow_tracking_uri,
                settings.resolved_airflow_sql_alchemy_conn):
        assert str(home.resolve()) in url, url
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.kafka_bootstrap is None and settings.spark_remote is None and settings.redis_url is None


def test_production_urls_come_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_DATABASE_URL", "postgresql+psycopg://u@db:5432/shironzi")
    monkeypatch.setenv("SHIRONZI_LAKE_URI", "s3://bucket/lake/")
    monkeypatch.setenv("SHIRONZI_STORAGE_OPTIONS", '{"AWS_REGION": "eu-west-1"}')
    monkeypatch.setenv("SHIRONZI_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow@db/airflow")
    get_settings.cache_clear()
    s = get_settings()
    assert s.resolved_database_url == "postgresql+psycopg://u@db:5432/shironzi"
    assert s.resolved_lake_uri == "s3://bucket/lake"
    assert s.storage_options == {"AWS_REGION": "eu-west-1"}
    assert s.kafka_bootstrap == "kafka:9092"
    assert s.resolved_mlflow_tracking_uri == "http://mlflow:5000"
    assert s.resolved_airflow_sql_alchemy_conn == "postgresql://airflow@db/airflow"


def test_prod_refuses_placeholder_secrets(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_ENV", "prod")
    with pytest.raises(ConfigurationError, match="MASTER_KEY"):
        Settings()
    monkeypatch.setenv("SHIRONZI_MASTER_KEY", "a-real-master-key-0123456789")
    monkeypatch.setenv("SHIRONZI_PLATFORM_KEY", "a-real-platform-key-0123456789")
    assert Settings().env == "prod"


def test_key_cache_ttl_is_capped_at_sixty_seconds(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_KEY_CACHE_TTL_SECONDS", "120")
    with pytest.raises(Exception, match="60"):
        Settings()


def test_default_region_must_be_a_configured_region(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_DEFAULT_REGION", "mars-north")
    with pytest.raises(ConfigurationError, match="mars-north"):
        Settings()
