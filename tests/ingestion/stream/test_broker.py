"""The bundled broker launcher and the topic helpers, against a real tansu process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from ingestion.stream import broker
from ingestion.stream.broker import (
    broker_status,
    ensure_topic,
    list_topics,
    resolve_bootstrap,
    running_broker,
    start_broker,
    stop_broker,
    topic_partitions,
)
from shironzi.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from shironzi.settings import get_settings
from tests._services import free_port
from tests.ingestion.stream._fixtures import require_broker_binary

pytestmark = pytest.mark.integration


def _accepts_connections(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_start_is_idempotent_writes_state_and_stop_cleans_up(tmp_path: Path) -> None:
    require_broker_binary()
    port = free_port()
    info = start_broker(home=tmp_path, port=port)
    try:
        assert info.bootstrap == f"127.0.0.1:{port}"
        state_dir = tmp_path / "broker"
        state = json.loads((state_dir / "broker.json").read_text())
        assert state["pid"] == info.pid and state["bootstrap"] == info.bootstrap
        assert int((state_dir / "broker.pid").read_text()) == info.pid
        assert info.log_path == state_dir / "broker.log" and info.log_path.exists()
        assert list_topics(info.bootstrap) == {}  # it answers Kafka metadata requests

        status = broker_status(home=tmp_path)
        assert status.running and status.info == info
        assert info.uptime_seconds >= 0

        again = start_broker(home=tmp_path)
        assert again == info, "a second start must return the running broker, not start another"
        with pytest.raises(ConflictError, match="already running"):
            start_broker(home=tmp_path, port=free_port())
    finally:
        assert stop_broker(home=tmp_path) is True
    assert not _accepts_connections(info.bootstrap)
    assert not (tmp_path / "broker" / "broker.json").exists()
    assert not (tmp_path / "broker" / "broker.pid").exists()
    status = broker_status(home=tmp_path)
    assert not status.running and status.info is None and "not running" in status.detail
    assert stop_broker(home=tmp_path) is False


def test_stale_state_is_reported_and_replaced(tmp_path: Path) -> None:
    require_broker_binary()
    exited = subprocess.Popen(["true"])
    exited.wait()
    state_dir = tmp_path / "broker"
    state_dir.mkdir()
    (state_dir / "broker.json").write_text(
        json.dumps(
            {
                "pid": exited.pid,
                "bootstrap": "127.0.0.1:1",
                "started_at": "2024-01-01T00:00:00+00:00",
                "log_path": str(state_dir / "broker.log"),
            }
        )
    )
    status = broker_status(home=tmp_path)
    assert not status.running and "stale" in status.detail

    info = start_broker(home=tmp_path, port=free_port())
    try:
        assert info.pid != exited.pid and broker_status(home=tmp_path).running
    finally:
        stop_broker(home=tmp_path)


def test_port_in_use_is_a_clear_conflict(tmp_path: Path) -> None:
    require_broker_binary()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConflictError, match=f"port {port}"):
            start_broker(home=tmp_path, port=port)
    assert not (tmp_path / "broker" / "broker.json").exists()


def test_running_broker_stops_its_process(tmp_path: Path) -> None:
    require_broker_binary()
    with running_broker(tmp_path) as info:
        assert _accepts_connections(info.bootstrap)
        pid = info.pid
    assert not broker._pid_alive(pid)
    assert not _accepts_connections(info.bootstrap)


def test_resolve_bootstrap_prefers_settings_then_bundled_broker(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_broker_binary()
    with pytest.raises(ServiceUnavailableError, match="shironzi broker start"):
        resolve_bootstrap(get_settings())

    info = start_broker(home=home, port=free_port())
    try:
        assert resolve_bootstrap(get_settings()) == info.bootstrap
        assert resolve_bootstrap() == info.bootstrap
        monkeypatch.setenv("SHIRONZI_KAFKA_BOOTSTRAP", "kafka.internal:9092")
        get_settings.cache_clear()
        assert resolve_bootstrap(get_settings()) == "kafka.internal:9092"
    finally:
        stop_broker(home=home)


def test_ensure_topic_is_idempotent_and_refuses_a_different_shape(
    broker_bootstrap: str, topic_name: str
) -> None:
    assert ensure_topic(broker_bootstrap, topic_name, partitions=3) is True
    assert ensure_topic(broker_bootstrap, topic_name, partitions=3) is False
    assert list_topics(broker_bootstrap)[topic_name] == 3
    assert topic_partitions(broker_bootstrap, topic_name) == 3
    with pytest.raises(ConflictError, match="3 partitions, not 5"):
        ensure_topic(broker_bootstrap, topic_name, partitions=5)


@pytest.mark.parametrize(("name", "partitions"), [("bad name!", 1), ("", 1), ("x" * 250, 1), ("ok", 0)])
def test_ensure_topic_rejects_bad_input(broker_bootstrap: str, name: str, partitions: int) -> None:
    before = list_topics(broker_bootstrap)
    with pytest.raises(InvalidInputError):
        ensure_topic(broker_bootstrap, name, partitions=partitions)
    assert list_topics(broker_bootstrap) == before


def test_unknown_topic_is_not_found(broker_bootstrap: str) -> None:
    with pytest.raises(NotFoundError, match="does-not-exist"):
        topic_partitions(broker_bootstrap, "does-not-exist")


def test_unreachable_broker_gives_a_clear_error() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailableError, match="unreachable") as caught:
        list_topics(dead, timeout_s=1.5)
    assert "shironzi broker start" in caught.value.message and caught.value.status == 503


def test_start_reports_a_broker_that_dies_at_startup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'tansu: cannot bind listener' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(broker, "find_broker_binary", lambda: str(fake))
    with pytest.raises(ServiceUnavailableError, match="cannot bind listener"):
        start_broker(home=tmp_path, port=free_port(), timeout_s=10)
    assert not (tmp_path / "broker" / "broker.json").exists()
    assert os.path.exists(tmp_path / "broker" / "broker.log")
