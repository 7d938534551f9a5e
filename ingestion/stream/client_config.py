"""Kafka client properties from `SHIRONZI_KAFKA_CONFIG`: the one builder behind every producer, consumer and
admin client of both Kafka clients.

The setting is a JSON object of librdkafka property names (`security.protocol`, `sasl.mechanism`,
`sasl.username`, `sasl.password`, `ssl.ca.location`, `client.id`, ...), the names Kafka's own clients and
the managed services (MSK, Confluent Cloud, Redpanda) document. confluent-kafka takes them as they are;
kafka-python gets them translated to its keyword names. A property kafka-python has no equivalent for is a
`ConfigurationError` naming it, never silently dropped: a security setting that is not applied must not
look applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from shironzi.errors import ConfigurationError
from shironzi.settings import Settings, get_settings

SETTING = "SHIRONZI_KAFKA_CONFIG"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
RESERVED = {
    "bootstrap.servers": "set SHIRONZI_KAFKA_BOOTSTRAP (or --bootstrap) instead",
    "group.id": "the consumer group is chosen per command (--group)",
}

# librdkafka name -> kafka-python keyword, for the properties both clients understand.
KAFKA_PYTHON_NAMES: dict[str, str] = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.crl.location": "ssl_crlfile",
    "ssl.cipher.suites": "ssl_ciphers",
    "ssl.endpoint.identification.algorithm": "ssl_check_hostname",
    "client.id": "client_id",
    "request.timeout.ms": "request_timeout_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "reconnect.backoff.ms": "reconnect_backoff_ms",
    "reconnect.backoff.max.ms": "reconnect_backoff_max_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
}
_INTEGER_PROPERTIES = frozenset(name for name in KAFKA_PYTHON_NAMES if name.endswith(".ms"))

ClientKind = Literal["confluent", "kafka-python"]
_Client = TypeVar("_Client")


def _fail(message: str) -> ConfigurationError:
    return ConfigurationError(f"{SETTING}: {message}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().upper()
    if text not in allowed:
        raise _fail(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return text


def _integer(name: str, value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _fail(f"{name} must be a whole number of milliseconds, got {value!r}") from None
    if number < 0:
        raise _fail(f"{name} must not be negative, got {value!r}")
    return number


def kafka_properties(settings: Settings | None = None) -> dict[str, Any]:
    """The checked librdkafka properties of `SHIRONZI_KAFKA_CONFIG` (known values normalised)."""
    raw = (settings or get_settings()).kafka_config
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in RESERVED:
            raise _fail(f"{name} cannot be set here: {RESERVED[name]}")
        if name == "security.protocol":
            value = _choice(name, value, SECURITY_PROTOCOLS)
        elif name in ("sasl.mechanism", "sasl.mechanisms"):
            value = _choice(name, value, SASL_MECHANISMS)
        elif name in _INTEGER_PROPERTIES:
            value = _integer(name, value)
        out[name] = value
    return out


def _hostname_check(value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in ("https", "none", ""):
        raise _fail(f"ssl.endpoint.identification.algorithm must be https or none, got {value!r}")
    return text == "https"


_KAFKA_PYTHON_VALUES: dict[str, Callable[[Any], Any]] = {"ssl.endpoint.identification.algorithm": _hostname_check}


def to_kafka_python(properties: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka properties as kafka-python keywords; an untranslatable one is a ConfigurationError."""
    out: dict[str, Any] = {}
    for name, value in properties.items():
        keyword = KAFKA_PYTHON_NAMES.get(name)
        if keyword is None:
            raise _fail(
                f"{name} has no kafka-python equivalent; use the confluent client, or one of "
                f"{', '.join(sorted(KAFKA_PYTHON_NAMES))}"
            )
        if name in ("sasl.mechanism", "sasl.mechanisms") and value == "OAUTHBEARER":
            raise _fail("sasl.mechanism OAUTHBEARER needs a token provider object with kafka-python; "
                        "use the confluent client")
        out[keyword] = _KAFKA_PYTHON_VALUES.get(name, lambda v: v)(value)
    return out


def client_properties(client: ClientKind, settings: Settings | None = None) -> dict[str, Any]:
    """The `SHIRONZI_KAFKA_CONFIG` properties in `client`'s own names, ready to merge into its config."""
    properties = kafka_properties(settings)
    return properties if client == "confluent" else to_kafka_python(properties)


def build_confluent(factory: Callable[[dict[str, Any]], _Client], config: dict[str, Any]) -> _Client:
    """Construct a confluent-kafka client (Consumer, Producer, AdminClient); a property or value librdkafka
    rejects is a ConfigurationError with librdkafka's reason."""
    from confluent_kafka import KafkaException

    try:
        return factory(config)
    except (KafkaException, ValueError, TypeError) as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise ConfigurationError(f"Kafka client settings rejected (check {SETTING}): {reason}") from exc
