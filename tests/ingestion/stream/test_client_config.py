"""SHIRONZI_KAFKA_CONFIG: translated for kafka-python, passed as is to confluent-kafka, checked with one
readable error, and applied to real clients against the bundled broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingestion.stream.client_config import client_properties, kafka_properties, to_kafka_python
from shironzi.errors import ConfigurationError
from shironzi.settings import Settings, get_settings

SASL_SSL = {
    "security.protocol": "sasl_ssl",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "ingest",
    "sasl.password": "s3cret",
    "ssl.ca.location": "/etc/kafka/ca.pem",
    "ssl.endpoint.identification.algorithm": "https",
    "client.id": "shironzi-ingest",
    "request.timeout.ms": "45000",
}


def _settings(home: Path, config: dict[str, object]) -> Settings:
    return Settings(home=home, kafka_config=config)


def test_librdkafka_properties_are_translated_for_kafka_python_and_kept_for_confluent(home: Path) -> None:
    settings = _settings(home, SASL_SSL)
    assert client_properties("kafka-python", settings) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ingest",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "ssl_check_hostname": True,
        "client_id": "shironzi-ingest",
        "request_timeout_ms": 45000,
    }
    confluent = client_properties("confluent", settings)
    assert confluent == {**SASL_SSL, "security.protocol": "SASL_SSL", "request.timeout.ms": 45000}
    assert client_properties("confluent", _settings(home, {})) == {}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"security.protocol": "TLS"}, "security.protocol must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"sasl.mechanism": "DIGEST"}, "sasl.mechanism must be one of"),
        ({"bootstrap.servers": "k:9092"}, "bootstrap.servers cannot be set here"),
        ({"request.timeout.ms": "soon"}, "request.timeout.ms must be a whole number"),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_property(
    home: Path, config: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        kafka_properties(_settings(home, config))


def test_a_property_kafka_python_cannot_take_is_refused_by_name_not_dropped() -> None:
    with pytest.raises(ConfigurationError, match="queue.buffering.max.ms has no kafka-python equivalent"):
        to_kafka_python({"queue.buffering.max.ms": 5})
    with pytest.raises(ConfigurationError, match="OAUTHBEARER"):
        to_kafka_python({"sasl.mechanism": "OAUTHBEARER"})


def test_a_nested_value_is_refused_when_the_settings_load(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_KAFKA_CONFIG", json.dumps({"sasl.username": {"user": "x"}}))
    get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="sasl.username must be a string, number or boolean"):
        get_settings()
    get_settings.cache_clear()


def test_the_cli_reports_a_bad_kafka_config_in_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shironzi.cli import main

    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("SHIRONZI_KAFKA_CONFIG", json.dumps({"security.protocol": "TLS"}))
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exited:
        main.run(["ingest", "stream", "--topic", "events", "--bootstrap", "127.0.0.1:9", "--until-caught-up"])
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: configuration_error: SHIRONZI_KAFKA_CONFIG: security.protocol"), lines
    get_settings.cache_clear()


@pytest.mark.integration
@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_ingest_with_explicit_plaintext_and_client_id_against_the_bundled_broker(
    client: str, broker_bootstrap: str, topic_name: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled broker speaks PLAINTEXT only (no SASL/TLS): the properties reach both clients and work."""
    from ingestion.stream import make_source
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions
    from ingestion.synthetic import simulate
    from tests.ingestion._fixtures import provision
    from tests.ingestion.stream._fixtures import produce

    monkeypatch.setenv(
        "SHIRONZI_KAFKA_CONFIG", json.dumps({"security.protocol": "PLAINTEXT", "client.id": "shironzi-test-ingest"})
    )
    get_settings.cache_clear()
    tenants = provision([("shop-one", "ecommerce", "standard")])
    sim = simulate([(t.id, t.industry) for t in tenants], customers=20, days=5, seed=2)
    sent = produce(broker_bootstrap, topic_name, sim, partitions=2)
    options = StreamOptions(topic=topic_name, bootstrap=broker_bootstrap, until_caught_up=True, client=client,  # type: ignore[arg-type]
                            api_version=(2, 5) if client == "kafka-python" else None)
    result = StreamIngestor(options).run()
    assert result.totals.received == sent and result.totals.landed == sim.events.height
    if client == "kafka-python":  # the translated properties are the consumer's own settings
        with make_source("kafka-python", broker_bootstrap, api_version=(2, 5)) as source:
            consumer = source._consumer  # type: ignore[attr-defined]
            assert consumer.config["client_id"] == "shironzi-test-ingest"
            assert consumer.config["security_protocol"] == "PLAINTEXT"
