"""Stream supervision (the stream_supervisor DAG's steps): a real detached ingestor on the bundled broker is
watched, its lag measured from the lake, killed, and restarted."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.stream.supervision import (
    IngestorSpec,
    ingestor_status,
    start_ingestor,
    stop_ingestor,
    stream_lag,
    supervise_ingestors,
    supervised_ingestors,
)
from shironzi.errors import StreamLagError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_for(condition: Callable[[], bool], timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_supervisor_measures_lag_restarts_a_dead_ingestor_and_alerts(
    home: Path, broker_bootstrap: str, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingestion.stream import ensure_topic, make_sink
    from ingestion.synthetic import iter_payload_batches, simulate
    from orchestration.pipeline import check_stream_health
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry

    monkeypatch.setenv("SHIRONZI_KAFKA_BOOTSTRAP", broker_bootstrap)
    get_settings.cache_clear()
    settings = get_settings()
    tenant, _ = get_registry(settings).provision_tenant(
        TenantContext.admin(actor="test", purpose="supervision"), slug="stream-co", name="Stream Co",
        industry="ecommerce", plan="standard",
    )
    sim = simulate([(tenant.id, "ecommerce")], customers=30, days=5, seed=1)
    ensure_topic(broker_bootstrap, topic_name, partitions=2)
    sent = 0
    with make_sink("confluent", broker_bootstrap) as sink:
        for batch in iter_payload_batches(sim):
            for key, value in zip(batch.keys, batch.values, strict=True):
                sink.produce(topic_name, key, value)
                sent += 1
        sink.flush()

    spec = IngestorSpec(topic_name)
    # Nothing landed yet, so there is lag. (The bundled broker can report its high watermarks late, for
    # over a minute on a loaded machine, so the full count is not awaited here; it is a known issue.)
    seen: list[dict[int, int]] = []

    def lag_is_seen() -> bool:
        seen.append(stream_lag(spec, settings=settings))
        return 0 < sum(seen[-1].values()) <= sent

    assert _wait_for(lag_is_seen, 120), f"sent {sent}, lag per partition {seen[-3:]}"
    assert ingestor_status(spec, settings=settings).detail == "not supervised"

    first = start_ingestor(spec, settings=settings)
    try:
        assert first.alive and supervised_ingestors(settings) == [spec]
        assert _wait_for(lambda: sum(stream_lag(spec, settings=settings).values()) == 0), "ingestor never caught up"

        os.kill(first.pid or 0, signal.SIGKILL)
        assert _wait_for(lambda: not ingestor_status(spec, settings=settings, with_lag=False).alive, 10)
        # Without restarting, the health check fails loudly (the DAG's alert).
        with pytest.raises(StreamLagError, match="dead"):
            check_stream_health(supervise_ingestors(settings=settings, restart=False).as_dict())

        report = supervise_ingestors(settings=settings, max_lag=0)
        assert report.restarted == [spec.name]
        second = ingestor_status(spec, settings=settings)
        assert second.alive and second.pid != first.pid and second.lag == {0: 0, 1: 0}
        assert check_stream_health(report.as_dict())["restarted"] == [spec.name]
    finally:
        stop_ingestor(spec, settings=settings)
    assert supervised_ingestors(settings) == []
    assert not ingestor_status(spec, settings=settings).alive
