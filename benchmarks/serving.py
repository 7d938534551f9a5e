"""Serving throughput and latency: `shironzi serve api` against `mlflow models serve` on the same model.

Both servers run with 2 uvicorn workers on loopback, in the same run, serving the same registered model
(`models:/shironzi-churn@champion`). A second process drives each one with an asyncio keep-alive HTTP/1.1
load generator for the same duration and concurrency:

* ours: `GET /v1/customers/{id}/churn` with a tenant key: key check, rate limit, online feature lookup,
  calibrated XGBoost `inplace_predict`, top-3 reasons, audit event, metrics;
* peer: `POST /invocations` with that customer's feature vector in the body (the peer has no feature store
  and returns only the raw probability).

Targets (issue 7): ours >= 1,000 req/s at p99 <= 25 ms, and >= 3x the peer's throughput.

    python benchmarks/serving.py [--home DIR] [--seconds 15] [--concurrency 8]

Without --home a small lake is built and a champion trained in a temporary SHIRONZI_HOME (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHURN = "shironzi-churn"
TARGET_RPS = 1000.0
TARGET_P99_MS = 25.0
TARGET_RATIO = 3.0


# --------------------------------------------------------------------------------------- load generator


async def _worker(host: str, port: int, requests: list[bytes], deadline: float, warmup_until: float,
                  latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = random.randrange(len(requests))
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            request = requests[index % len(requests)]
            index += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if started >= warmup_until:
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors.append(status)
    finally:
        writer.close()


async def _drive(host: str, port: int, requests: list[bytes], seconds: float, warmup: float,
                 concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    warmup_until, deadline = start + warmup, start + warmup + seconds
    await asyncio.gather(*(
        _worker(host, port, requests, deadline, warmup_until, latencies, errors) for _ in range(concurrency)
    ))
    ordered = sorted(latencies)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    return {"requests": len(ordered), "errors": len(errors), "error_statuses": sorted(set(errors))[:5],
            "rps": len(ordered) / seconds, "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


def drive_main(spec_path: str) -> None:
    """Entry of the load-generator process: read the spec, drive, print one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    requests = [r.encode("latin-1") for r in spec["requests"]]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_drive(spec["host"], spec["port"], requests, spec["seconds"], spec["warmup"],
                                spec["concurrency"]))
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------- setup


def _prepare_home(home: Path) -> None:
    """A small real lake (demo stages) and a promoted churn champion, unless one exists already."""
    from models.tracking import aliases

    os.environ["SHIRONZI_HOME"] = str(home)
    from shironzi.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    try:
        if "champion" in aliases(CHURN, settings=settings):
            return
    except Exception:  # noqa: BLE001 - nothing registered yet
        pass
    from models.churn import train_churn
    from models.registry import promote_if_better
    from orchestration.demo import (
        DemoState,
        build_and_materialize_features,
        build_curated_layer,
        provision_demo_tenants,
        simulate_and_land_files,
    )

    print("building a small lake and training a champion (about a minute) ...", flush=True)
    state = DemoState(settings=settings, seed=7, days=120, customers=600)
    for stage_fn in (provision_demo_tenants, simulate_and_land_files, build_curated_layer,
                     build_and_materialize_features):
        stage_fn(state)
    train_churn(settings=settings, seed=0)
    promote_if_better(CHURN, settings=settings)


def _workload(max_customers: int = 500) -> dict[str, Any]:
    """A tenant key, that tenant's customers, and their feature vectors in the model's column order."""
    from feature_store.materialize import get_online_features
    from feature_store.online import open_online_store
    from models.inference import load_churn_predictor
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry

    settings = get_settings()
    predictor = load_churn_predictor(settings=settings)
    store = open_online_store(settings=settings)
    try:
        by_tenant: dict[str, set[str]] = {}
        for row in store.iter_rows():
            if row.entity_key:
                by_tenant.setdefault(row.tenant_id, set()).add(row.entity_key)
    finally:
        store.close()
    registry = get_registry(settings)
    eligible = [t for t in sorted(by_tenant, key=lambda t: -len(by_tenant[t]))
                if registry.is_enabled(t, "churn_prediction")]
    tenant_id = eligible[0]
    customers = sorted(by_tenant[tenant_id])[:max_customers]
    ctx = TenantContext.admin(actor="benchmark", purpose="serving benchmark")
    _, key = registry.issue_key(ctx, tenant_id, scopes=["read"], label="benchmark")
    rows = get_online_features(tenant_id, customers, predictor.feature_names, settings=settings)
    model = predictor.model_for(tenant_id)
    names, refs = model.feature_names, model.feature_refs
    vectors = []
    for row in rows:
        vectors.append([row.get(n, row.get(r)) for n, r in zip(names, refs, strict=True)])
    return {"tenant_id": tenant_id, "key": key, "customers": customers, "columns": list(names),
            "vectors": vectors, "version": predictor.version}


def _our_requests(work: dict[str, Any], port: int) -> list[str]:
    return [
        f"GET /v1/customers/{cid}/churn HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {work['key']}\r\n\r\n"
        for cid in work["customers"]
    ]


def _peer_requests(work: dict[str, Any], port: int) -> list[str]:
    out = []
    for vector in work["vectors"]:
        body = json.dumps({"dataframe_split": {"columns": work["columns"], "data": [vector]}})
        out.append(
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float, process: subprocess.Popen[Any]) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def _run_load(
    host: str, port: int, requests: list[str], args: argparse.Namespace, tmp: Path, name: str
) -> dict[str, Any]:
    spec = tmp / f"{name}.json"
    spec.write_text(json.dumps({"host": host, "port": port, "requests": requests, "seconds": args.seconds,
                                "warmup": args.warmup, "concurrency": args.concurrency}))
    out = subprocess.run([sys.executable, __file__, "--drive", str(spec)], capture_output=True, text=True,
                         timeout=args.seconds + args.warmup + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="SHIRONZI_HOME with a trained champion")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drive", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive_main(args.drive)
        return

    from benchmarks._machine import print_header

    print_header("serving: shironzi serve api vs mlflow models serve")
    tmp = Path(tempfile.mkdtemp(prefix="shironzi-bench-serving-"))
    home = (args.home or tmp / "home").resolve()
    _prepare_home(home)
    work = _workload()
    from models.tracking import tracking_uri
    from shironzi.settings import get_settings

    uri = tracking_uri(get_settings())
    env = {**os.environ, "SHIRONZI_HOME": str(home), "MLFLOW_TRACKING_URI": uri,
           "SHIRONZI_API_RATE_LIMITS": json.dumps({"free": 1e6, "standard": 1e6, "enterprise": 1e6}),
           "SHIRONZI_LOG_LEVEL": "WARNING", "MLFLOW_DISABLE_TELEMETRY": "true"}
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # mlflow starts `uvicorn` by name
    ours_port, peer_port = _free_port(), _free_port()
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("ours", "peer")}  # noqa: SIM115
    ours = subprocess.Popen([str(bin_dir / "shironzi"), "serve", "api", "--port", str(ours_port),
                             "--workers", str(args.workers)], env=env, stdout=logs["ours"], stderr=subprocess.STDOUT)
    peer = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{CHURN}@champion",
                             "--env-manager", "local", "-p", str(peer_port), "-h", "127.0.0.1",
                             "-w", str(args.workers)], env=env, stdout=logs["peer"], stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{ours_port}/readyz", 120, ours)
        _wait_http(f"http://127.0.0.1:{peer_port}/ping", 180, peer)
        print(f"model      {CHURN} version {work['version']} (champion), tenant {work['tenant_id']}, "
              f"{len(work['customers'])} customers, {len(work['columns'])} features")
        print(f"load       {args.concurrency} keep-alive connections, {args.warmup:.0f} s warm-up + "
              f"{args.seconds:.0f} s measured, separate process on loopback; {args.workers} workers per server")
        ours_result = _run_load("127.0.0.1", ours_port, _our_requests(work, ours_port), args, tmp, "ours")
        peer_result = _run_load("127.0.0.1", peer_port, _peer_requests(work, peer_port), args, tmp, "peer")
    finally:
        for process in (ours, peer):
            process.terminate()
        for process in (ours, peer):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in logs.values():
            handle.close()

    print("")
    print(f"{'server':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for label, result in (("shironzi serve api (features + model + audit)", ours_result),
                          ("mlflow models serve (vector in body)", peer_result)):
        print(f"{label:<44} {result['rps']:>9,.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} "
              f"{result['max_ms']:>8.2f} {result['errors']:>7}")
    ratio = ours_result["rps"] / peer_result["rps"] if peer_result["rps"] else float("inf")
    p99_ratio = ours_result["p99_ms"] / peer_result["p99_ms"] if peer_result["p99_ms"] else float("nan")
    print("")
    print(f"throughput ratio (ours / mlflow) {ratio:.2f}x   (goal >= {TARGET_RATIO:.0f}x)")
    print(f"p99 ratio (ours / mlflow)        {p99_ratio:.2f}")
    verdict = ours_result["rps"] >= TARGET_RPS and ours_result["p99_ms"] <= TARGET_P99_MS
    print(f"target ours >= {TARGET_RPS:,.0f} req/s at p99 <= {TARGET_P99_MS:.0f} ms: "
          f"{'MET' if verdict else 'NOT MET'}; ratio goal {'MET' if ratio >= TARGET_RATIO else 'NOT MET'}")
    if ours_result["errors"] or peer_result["errors"]:
        print(f"non-200 answers: ours {ours_result['error_statuses']}, mlflow {peer_result['error_statuses']}")


if __name__ == "__main__":
    main()
