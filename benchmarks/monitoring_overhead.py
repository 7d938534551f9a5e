"""What monitoring costs a stage: `shironzi.observability.stage` timed with and without the monitoring observer
(metrics + a span, tracing off and on with an in-memory exporter), and one push to a monitor process.

    .venv/bin/python benchmarks/monitoring_overhead.py                 # 5 rounds x 2,000 stages
    .venv/bin/python benchmarks/monitoring_overhead.py --stages 500    # quick run

A stage is milliseconds to minutes of work, so the figure that matters is the overhead per stage in
microseconds (plus the push, once per stage, only when a monitor or Pushgateway is configured).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]


def _per_stage_us(stages: int, observers: tuple) -> float:
    from shironzi import observability

    original = observability.stage_observers
    observability.stage_observers = lambda: observers  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        for i in range(stages):
            with observability.stage("ingest_stream_flush", topic="events", worker="0/1") as summary:
                summary.rows = i
                summary.extra.update(quarantined=1, duplicates=0, quarantined_by_reason={"missing_field": 1})
        return (time.perf_counter() - started) / stages * 1e6
    finally:
        observability.stage_observers = original  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stages", type=int, default=2_000)
    args = parser.parse_args()
    os.environ.setdefault("SHIRONZI_HOME", tempfile.mkdtemp(prefix="shironzi-bench-"))
    logging.getLogger("shironzi").addHandler(logging.NullHandler())
    logging.getLogger("shironzi").propagate = False
    print_header("monitoring overhead per stage")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from monitoring.metrics import observe_stage, push_metrics
    from monitoring.server import make_server
    from monitoring.tracing import configure_tracing
    from shironzi.settings import Settings

    variants: dict[str, list[float]] = {"no observer": [], "metrics, tracing off": [], "metrics + span kept": []}
    exporter = InMemorySpanExporter()
    for _ in range(args.rounds):  # interleaved: a shared machine slows all variants alike
        variants["no observer"].append(_per_stage_us(args.stages, ()))
        variants["metrics, tracing off"].append(_per_stage_us(args.stages, (observe_stage,)))
        configure_tracing(exporter=exporter)
        variants["metrics + span kept"].append(_per_stage_us(args.stages, (observe_stage,)))
        configure_tracing(exporter=None, settings=Settings(otel_exporter_otlp_endpoint=None))
        exporter.clear()
    print(f"{'variant':<24} {'min us/stage':>13} {'median us/stage':>16}")
    for name, values in variants.items():
        print(f"{name:<24} {min(values):>13.1f} {statistics.median(values):>16.1f}")

    import threading

    server, _ = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings = Settings(monitor_url=url)
    push_metrics(settings=settings)
    pushes = []
    for _ in range(50):
        started = time.perf_counter()
        assert push_metrics(settings=settings)
        pushes.append((time.perf_counter() - started) * 1e3)
    server.shutdown()
    print(f"push to a local monitor: median {statistics.median(pushes):.2f} ms, max {max(pushes):.2f} ms "
          f"(50 pushes of this process's registry)")


if __name__ == "__main__":
    main()
