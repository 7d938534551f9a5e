"""Release channels on the live churn route: p99 with routing through channels and a live rollout against p99
without (every tenant on `stable`, no rollout), on the same `shironzi serve api` workers.

The measured tenant is put on `canary` and a rollout of a candidate version (the champion's run registered again:
same trees, so only routing differs) is started; the workers follow through the registry invalidation, and every
answer must then carry the candidate's version. The two configurations alternate (off, on, off, on) and each
figure is the mean of its rounds. Target (issue 25): p99 with channels within 10 % of p99 without.

    python benchmarks/release_channels.py [--home DIR] [--seconds 10] [--concurrency 8] [--channel-tenants 200]
    python benchmarks/release_channels.py --routing-only     # the in-process routing cost alone (no servers)

On a loaded machine the HTTP figures are noisy; the in-process figure (the cost `model_for` adds per request,
with 100,000 tenants of which 10 % are canary or pinned and a rollout at its 50 % wave) does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.serving import (  # noqa: E402 - after the sys.path line, like every benchmark
    CHURN,
    _free_port,
    _our_requests,
    _prepare_home,
    _run_load,
    _wait_http,
    _workload,
)

TARGET_RATIO = 1.10


def _candidate_version() -> str:
    """The champion's run registered again as a new version of the churn model."""
    import mlflow

    from models.tracking import aliases, configure_mlflow, version_run_id

    configure_mlflow()
    run_id = version_run_id(CHURN, aliases(CHURN)["champion"])
    return str(mlflow.register_model(f"runs:/{run_id}/model", CHURN).version)


def _channels_on(tenant_id: str, candidate: str, others: list[str]) -> str:
    from models.releases.rollout import start_rollout
    from shironzi.tenancy import TenantContext, get_registry

    ctx = TenantContext.admin(actor="benchmark", purpose="release channels benchmark")
    registry = get_registry()
    registry.set_channel(ctx, tenant_id, "canary")
    for index, other in enumerate(others):
        registry.set_channel(ctx, other, "canary" if index % 2 else f"pinned:churn@{candidate}")
    return start_rollout("churn", candidate, ctx=ctx).id


def _channels_off(tenant_id: str, rollout_id: str, others: list[str]) -> None:
    from models.releases.rollout import rollback_rollout
    from shironzi.tenancy import TenantContext, get_registry

    ctx = TenantContext.admin(actor="benchmark", purpose="release channels benchmark")
    rollback_rollout(rollout_id, ctx=ctx, reason="benchmark round over")
    registry = get_registry()
    for other in [tenant_id, *others]:
        registry.set_channel(ctx, other, "stable")


def _extra_tenants(count: int) -> list[str]:
    from shironzi.tenancy import TenantContext, get_registry
    from shironzi.tenancy.records import ProvisionSpec

    if count <= 0:
        return []
    ctx = TenantContext.admin(actor="benchmark", purpose="release channels benchmark")
    specs = [ProvisionSpec(slug=f"bench-channel-{time.time_ns():x}-{i}", name=f"Channel {i}", industry="ecommerce",
                           region="eu-west", plan="standard", placement="pooled") for i in range(count)]
    return [p.tenant.id for p in get_registry().provision_many(ctx, specs)]


def _serves(port: int, work: dict[str, Any], version: str, timeout: float = 60.0) -> None:
    """Wait until both workers answer the measured tenant with `version` (each request may hit either)."""
    import httpx

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v1/customers/{work['customers'][0]}/churn"
    streak = 0
    while time.monotonic() < deadline:
        answer = httpx.get(url, headers={"Authorization": f"Bearer {work['key']}"}, timeout=5).json()
        streak = streak + 1 if answer.get("model_version") == version else 0
        if streak >= 20:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the workers did not move to version {version} within {timeout}s")


def routing_cost(tenants: int = 100_000, lookups: int = 1_000_000) -> None:
    """Nanoseconds per `RouteTable.version_for` call (first lookups hash, repeats hit the memo)."""
    from models.releases.rollout import parse_waves
    from models.releases.routing import build_route_table

    ids = [f"t_{i:016x}" for i in range(tenants)]
    channels = {t: ("canary" if i % 2 else "pinned:churn@3") for i, t in enumerate(ids[: tenants // 10])}
    waves = parse_waves(["canary", "10", "50", "100"])
    for wave, state in zip(waves, ("passed", "passed", "analysing"), strict=False):
        wave["state"] = state
    rollout = {"id": "ro_bench", "model": CHURN, "candidate": "9", "status": "running", "waves": waves}
    started = time.perf_counter()
    table = build_route_table(CHURN, channels, [rollout])
    built = time.perf_counter() - started
    cold = time.perf_counter()
    for tenant_id in ids:
        table.version_for(tenant_id)
    cold = (time.perf_counter() - cold) / tenants
    warm = time.perf_counter()
    for i in range(lookups):
        table.version_for(ids[i % tenants])
    warm = (time.perf_counter() - warm) / lookups
    plain: dict[str, str] = {}
    base = time.perf_counter()
    for i in range(lookups):
        plain.get(ids[i % tenants])
    base = (time.perf_counter() - base) / lookups
    exposed = sum(table.version_for(t) == "9" for t in ids) / tenants
    print(f"routing    {tenants:,} tenants ({len(channels):,} canary/pinned), rollout at its 50 % wave "
          f"({exposed:.1%} served the candidate)")
    print(f"           table built in {built * 1e3:.1f} ms; version_for: first lookup {cold * 1e9:,.0f} ns, "
          f"repeat {warm * 1e9:,.0f} ns (a bare dict.get: {base * 1e9:,.0f} ns)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="SHIRONZI_HOME with a trained champion")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--channel-tenants", type=int, default=200, help="more tenants on canary/pinned")
    parser.add_argument("--routing-only", action="store_true", help="only the in-process routing cost")
    args = parser.parse_args()

    from benchmarks._machine import print_header

    print_header("release channels: live churn route p99 with channels vs without")
    routing_cost()
    if args.routing_only:
        return
    tmp = Path(tempfile.mkdtemp(prefix="shironzi-bench-channels-"))
    home = (args.home or tmp / "home").resolve()
    _prepare_home(home)
    work = _workload()
    candidate = _candidate_version()
    others = _extra_tenants(args.channel_tenants)
    from models.tracking import tracking_uri
    from shironzi.settings import get_settings

    env = {**os.environ, "SHIRONZI_HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri(get_settings()),
           "SHIRONZI_API_RATE_LIMITS": json.dumps({"free": 1e6, "standard": 1e6, "enterprise": 1e6}),
           "SHIRONZI_LOG_LEVEL": "WARNING", "MLFLOW_DISABLE_TELEMETRY": "true"}
    bin_dir = Path(sys.executable).parent
    port = _free_port()
    log = open(tmp / "api.log", "w")  # noqa: SIM115
    api = subprocess.Popen([str(bin_dir / "shironzi"), "serve", "api", "--port", str(port), "--workers",
                            str(args.workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    results: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    try:
        _wait_http(f"http://127.0.0.1:{port}/readyz", 120, api)
        requests = _our_requests(work, port)
        print(f"model      {CHURN} champion {work['version']}, candidate {candidate}; tenant {work['tenant_id']}, "
              f"{len(work['customers'])} customers; {len(others)} more tenants on canary/pinned while on")
        print(f"load       {args.concurrency} keep-alive connections, {args.warmup:.0f} s warm-up + "
              f"{args.seconds:.0f} s measured per round, {args.rounds} rounds each; {args.workers} workers")
        for _ in range(args.rounds):
            _serves(port, work, work["version"])
            results["without"].append(_run_load("127.0.0.1", port, requests, args, tmp, "without"))
            rollout = _channels_on(work["tenant_id"], candidate, others)
            _serves(port, work, candidate)
            results["with"].append(_run_load("127.0.0.1", port, requests, args, tmp, "with"))
            _channels_off(work["tenant_id"], rollout, others)
    finally:
        api.terminate()
        try:
            api.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.kill()
        log.close()

    print("")
    print(f"{'configuration':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    means = {}
    for name, label in (("without", "all stable, no rollout"), ("with", "canary + live rollout + pinned")):
        rounds = results[name]
        mean = {k: sum(r[k] for r in rounds) / len(rounds) for k in ("rps", "p50_ms", "p99_ms")}
        means[name] = mean
        print(f"{label:<40} {mean['rps']:>9,.0f} {mean['p50_ms']:>8.2f} {mean['p99_ms']:>8.2f} "
              f"{sum(r['errors'] for r in rounds):>7}")
    ratio = means["with"]["p99_ms"] / means["without"]["p99_ms"]
    print("")
    print(f"p99 ratio (with channels / without) {ratio:.3f}   target <= {TARGET_RATIO:.2f}: "
          f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'}")


if __name__ == "__main__":
    main()
