"""The stream ingestor serves /healthz on SHIRONZI_HEALTH_PORT while it runs (the Kubernetes liveness probe)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ingestion.stream.ingestor import StreamIngestor, StreamOptions
from shironzi.settings import get_settings
from tests._services import free_port
from tests.ingestion._fixtures import provision

pytestmark = pytest.mark.integration


def test_a_running_ingestor_answers_its_liveness_probe(
    home: Path, broker_bootstrap: str, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingestion.stream import ensure_topic

    provision([("shop-one", "ecommerce", "standard")])
    port = free_port()
    monkeypatch.setenv("SHIRONZI_HEALTH_PORT", str(port))
    get_settings.cache_clear()
    ensure_topic(broker_bootstrap, topic_name, partitions=1)
    ingestor = StreamIngestor(StreamOptions(topic=topic_name, bootstrap=broker_bootstrap, max_wait_ms=100,
                                            idle_timeout_s=4.0))
    worker = threading.Thread(target=ingestor.run, daemon=True)
    worker.start()
    body: dict[str, object] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and body.get("state") != "consuming":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:  # noqa: S310
                body = json.loads(answer.read())
        except OSError:
            time.sleep(0.1)
    assert body.get("status") == "ok" and body.get("state") == "consuming", body
    assert body.get("process") == "ingest-stream"
    worker.join(timeout=30)
    with pytest.raises(OSError):  # the run is over: the endpoint is gone with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310
