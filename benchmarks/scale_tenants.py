"""The same total of events over 1k, 10k and 100k tenants: does the platform's cost follow the data or the tenants?

    .venv/bin/python benchmarks/scale_tenants.py --tenants 1000,10000,100000 --events 10000000
    .venv/bin/python benchmarks/scale_tenants.py --tenants 100,1000,10000 --events 200000 --days 60

Tenant sizes are Zipf-like (tenant of rank r gets a share ~ 1/r^1.1 of the events: a few large tenants, a long tail
of tiny ones). For each scale a fresh SHIRONZI_HOME (`--out/<tenants>t_<events>e`) goes through the stages below;
each stage runs in its own child process, timed, with that process's peak RSS (getrusage). Prints one table (a row per
stage, a column per scale), the ratio of the largest scale's cost to the smallest's, and saves a PNG plot (cost
against tenants, log x) under docs/img/. Results are kept in `--out/results.json` after every stage: a run stopped
midway resumes where it stopped (`--force` reruns).

Stages: provision (the registry, one transaction), land (the batch history, written through the kernel's Delta
append, clustered by tenant: no contract check), stream (a slice of STREAM_EVENTS simulated events over every tenant,
produced to the real bundled broker and ingested by the stream ingestor: contract check, exactly once; every event
must land), dbt_full (a full build), dbt_onboard (1 % new tenants provisioned and their history landed, then the
timed incremental build: it must not be a full refresh, and the new tenants' silver rows must equal what was
landed), dbt_new_day (one more day for everyone, incremental), features (the offline feature build on Sail, then
the online materialisation), train_churn and train_trend (`models train` with the training-row cap: bounded memory;
the first churn model is promoted), score (`churn_prediction` scores for every tenant with the module, in the
score_batch DAG's chunks), api (`shironzi serve api` in a child process; keys of API_TENANTS tenants drawn over
every rank: p99 of the first request per key, cold caches, then of API_ROUNDS rounds, warm: `seconds` is the warm
p99), tenant_search (the registry's picker query, 20 prefixes), dashboard_search (the operator's sidebar search
through the Streamlit app, AppTest, slowest of 10), dashboard_page (every operator page and the largest tenant's
pages through the app: the slowest), retention (`retention enforce`), erasure (one subject of the largest tenant),
dbt_erased (the build after that erasure: incremental, it rebuilds that tenant alone), inventory (`audit inventory`
for one tenant).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.dbt_build import INDUSTRIES, INDUSTRY_EVENTS  # noqa: E402

STAGES = ("provision", "land", "stream", "dbt_full", "dbt_onboard", "dbt_new_day", "features", "train_churn",
          "train_trend", "score", "api", "tenant_search", "dashboard_search", "dashboard_page", "retention", "erasure",
          "dbt_erased", "inventory")
NEEDED = ("provision", "land", "dbt_full")  # the later stages need the lake these build: a failure stops the scale
STREAM_EVENTS = 100_000
API_TENANTS, API_ROUNDS = 200, 5
ZIPF = 1.1
EVENTS_PER_CUSTOMER = 20
ONBOARD_SHARE = 0.01
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ADMIN = "benchmark:scale_tenants"


# -- data ----------------------------------------------------------------------------------------------------------
def zipf_counts(tenants: int, events: int, rng: np.random.Generator) -> np.ndarray:
    """Events per tenant rank: a share ~ 1/rank^ZIPF of `events`, every tenant at least one."""
    weights = 1.0 / np.arange(1, tenants + 1) ** ZIPF
    counts = rng.multinomial(max(events - tenants, 0), weights / weights.sum()) + 1
    return counts.astype(np.int64)


def event_rows(
    tenant_ids: list[str], industries: list[str], counts: np.ndarray, *, first_day: int, days: int,
    ingested_at: dt.datetime, rng: np.random.Generator, id_prefix: str,
) -> pa.Table:
    """Canonical bronze rows: `counts[i]` events of tenant i, its customers ~ counts[i] / EVENTS_PER_CUSTOMER."""
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(tenant_ids)), counts)
    customers = np.maximum(1, counts // EVENTS_PER_CUSTOMER)[owner]
    customer = (rng.random(total) * customers).astype(np.int64)
    day = first_day + rng.integers(0, days, total)
    seconds = rng.integers(0, 86_400, total)
    event_type = np.empty(total, dtype=object)
    amount = np.full(total, np.nan)
    industry_of = np.array([INDUSTRIES.index(i) for i in industries])[owner]
    for code, name in enumerate(INDUSTRIES):
        mask = np.flatnonzero(industry_of == code)
        specs = INDUSTRY_EVENTS[name]
        weights = np.array([w for _, w, _ in specs], dtype=float)
        picks = rng.choice(len(specs), size=mask.size, p=weights / weights.sum())
        event_type[mask] = np.array([n for n, _, _ in specs], dtype=object)[picks]
        for index, (_, _, bounds) in enumerate(specs):
            if bounds:
                where = mask[picks == index]
                amount[where] = np.round(rng.uniform(*bounds, where.size), 2)
    ids = pa.array(np.arange(total).astype(str))
    micros = (day * 86_400 + seconds) * 1_000_000 + int(EPOCH.timestamp() * 1e6)
    has_amount = ~np.isnan(amount)
    return pa.table({
        "tenant_id": pa.array(np.asarray(tenant_ids, dtype=object)[owner], pa.string()),
        "event_id": pc.binary_join_element_wise(id_prefix, ids, ""),
        "customer_id": pc.binary_join_element_wise("c", pa.array(customer.astype(str)), ""),
        "event_type": pa.array(event_type, type=pa.string()),
        "event_time": pa.array(micros, type=pa.timestamp("us", tz="UTC")),
        "event_date": pa.array((day + (EPOCH.date() - dt.date(1970, 1, 1)).days).astype(np.int32), pa.date32()),
        "source": pa.array(np.full(total, "file", dtype=object), type=pa.string()),
        "ingested_at": pa.array(np.full(total, int(ingested_at.timestamp() * 1e6)), pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount, mask=~has_amount, type=pa.float64()),
        "currency": pa.array(np.where(has_amount, "EUR", None), type=pa.string()),
        "properties": pa.array(np.full(total, "{}", dtype=object), type=pa.string()),
    })


# -- stages (each runs in a child process with SHIRONZI_HOME set) --------------------------------------------------
class Run:
    """One scale's home: its parameters and the tenants it provisioned (ids in rank order, kept in a file)."""

    def __init__(self, home: Path, tenants: int, events: int, days: int) -> None:
        from shironzi.settings import get_settings

        self.home, self.tenants, self.events, self.days = home, tenants, events, days
        self.settings = get_settings()
        self.region = self.settings.default_region
        self.state = home / "scale_tenants.json"

    def ids(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def save(self, data: dict[str, Any]) -> None:
        self.state.write_text(json.dumps(data))

    def bronze(self) -> str:
        from transformations.dbt_runner import bronze_events_uri

        return bronze_events_uri(self.settings, self.region)

    def provision(self, count: int, *, first: int) -> tuple[list[str], list[str]]:
        from shironzi.tenancy import TenantContext, get_registry

        registry = get_registry(self.settings)
        admin = TenantContext.admin(actor=ADMIN, purpose="scale benchmark")
        specs = [registry.validate_spec(slug=f"scale-{n:06d}", name=f"Scale tenant {n}", industry=INDUSTRIES[n % 3],
                                        plan="standard", placement="pooled") for n in range(first, first + count)]
        made = registry.provision_many(admin, specs)
        return [m.tenant.id for m in made], [m.tenant.industry for m in made]

    def land(self, ids: list[str], industries: list[str], counts: np.ndarray, *, first_day: int, days: int,
             ingested_at: dt.datetime, prefix: str, seed: int) -> int:
        from shironzi.lake import append

        rng = np.random.default_rng(seed)
        landed, chunk = 0, max(1, len(ids) // max(1, int(counts.sum()) // 2_000_000 + 1))
        for start in range(0, len(ids), chunk):
            rows = event_rows(ids[start:start + chunk], industries[start:start + chunk], counts[start:start + chunk],
                              first_day=first_day, days=days, ingested_at=ingested_at, rng=rng,
                              id_prefix=f"{prefix}{start}-")
            append(self.bronze(), rows, partition_by="event_date",
                   storage_options=self.settings.storage_options or None)
            landed += rows.num_rows
        return landed

    def silver_rows(self, tenant_ids: list[str] | None = None) -> int:
        from shironzi.lake import read_arrow
        from transformations.dbt_runner import layer_root

        uri = f"{layer_root(self.settings, self.region, 'silver')}/int_events__unified"
        filters = [("tenant_id", "in", tenant_ids)] if tenant_ids is not None else None
        return read_arrow(uri, columns=["tenant_id"], filters=filters).num_rows


def stage_provision(run: Run) -> dict[str, Any]:
    started = time.perf_counter()
    ids, industries = run.provision(run.tenants, first=0)
    seconds = time.perf_counter() - started
    run.save({"ids": ids, "industries": industries})
    return {"seconds": seconds, "tenants": len(ids)}


def stage_land(run: Run) -> dict[str, Any]:
    state = run.ids()
    counts = zipf_counts(run.tenants, run.events, np.random.default_rng(1))
    started = time.perf_counter()
    landed = run.land(state["ids"], state["industries"], counts, first_day=0, days=run.days,
                      ingested_at=EPOCH + dt.timedelta(days=run.days), prefix="h", seed=2)
    run.save({**state, "landed": landed, "largest": state["ids"][0]})
    return {"seconds": time.perf_counter() - started, "rows": landed}


def _build(run: Run, *, full_refresh: bool = False) -> tuple[float, Any]:
    from transformations.dbt_runner import run_dbt_build

    started = time.perf_counter()
    result = run_dbt_build(region=run.region, settings=run.settings, full_refresh=full_refresh)
    if not result.success:
        raise SystemExit(f"dbt build failed: {result.failures[:3]}")
    return time.perf_counter() - started, result


def stage_dbt_full(run: Run) -> dict[str, Any]:
    seconds, result = _build(run, full_refresh=True)
    silver, landed = run.silver_rows(), run.ids()["landed"]
    if silver != landed:
        raise SystemExit(f"silver holds {silver} events, bronze {landed}")
    return {"seconds": seconds, "rows": silver, "full_refresh": result.full_refresh}


def stage_dbt_onboard(run: Run) -> dict[str, Any]:
    state = run.ids()
    new = max(1, math.ceil(run.tenants * ONBOARD_SHARE))
    ids, industries = run.provision(new, first=run.tenants)
    counts = np.full(new, max(1, run.events // run.tenants))  # an average tenant's history each
    landed = run.land(ids, industries, counts, first_day=0, days=run.days,
                      ingested_at=EPOCH + dt.timedelta(days=run.days, hours=1), prefix="o", seed=3)
    seconds, result = _build(run)
    if result.full_refresh:
        raise SystemExit("the build after onboarding was a full refresh")
    built = run.silver_rows(ids)
    if built != landed:
        raise SystemExit(f"the onboarded tenants have {built} silver events, {landed} landed")
    run.save({**state, "onboarded": ids, "landed": state["landed"] + landed})
    return {"seconds": seconds, "rows": built, "tenants": new, "full_refresh": result.full_refresh}


def stage_dbt_new_day(run: Run) -> dict[str, Any]:
    state = run.ids()
    ids, industries = state["ids"], state["industries"]
    counts = zipf_counts(len(ids), max(len(ids), run.events // run.days), np.random.default_rng(4))
    landed = run.land(ids, industries, counts, first_day=run.days, days=1,
                      ingested_at=EPOCH + dt.timedelta(days=run.days + 1), prefix="d", seed=5)
    seconds, result = _build(run)
    if result.full_refresh:
        raise SystemExit("the build after a new day was a full refresh")
    run.save({**state, "landed": state["landed"] + landed})
    return {"seconds": seconds, "rows": landed, "full_refresh": result.full_refresh}


def stage_stream(run: Run) -> dict[str, Any]:
    """STREAM_EVENTS events over every tenant (Zipf-sized by the simulator), through the bundled broker and the
    stream ingestor; timed from the first poll until caught up."""
    from ingestion.stream import ensure_topic, make_sink, running_broker
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions
    from ingestion.synthetic import iter_payload_batches, simulate

    state = run.ids()
    tenants = list(zip(state["ids"], state["industries"], strict=True))
    sim = simulate(tenants, customers=max(2 * len(tenants), STREAM_EVENTS // 10), days=2, seed=6,
                   start=(EPOCH + dt.timedelta(days=run.days + 1)).date(), target_events=STREAM_EVENTS)
    with running_broker(run.home / "broker") as info:
        ensure_topic(info.bootstrap, "events", partitions=4)
        sent = 0
        with make_sink("confluent", info.bootstrap) as sink:
            for batch in iter_payload_batches(sim, batch_size=50_000):
                for key, value in zip(batch.keys, batch.values, strict=True):
                    sink.produce("events", key, value)
                sent += len(batch)
            sink.flush()
        options = StreamOptions(topic="events", bootstrap=info.bootstrap, until_caught_up=True, max_batch=50_000,
                                max_wait_ms=500)
        result = StreamIngestor(options).run()
    totals = result.totals
    if totals.received != sent or totals.landed != sim.events.height:
        raise SystemExit(f"stream: sent {sent}, received {totals.received}, landed {totals.landed} "
                         f"of {sim.events.height}")
    run.save({**state, "landed": state["landed"] + totals.landed} if "landed" in state else state)
    return {"seconds": result.seconds, "rows": totals.landed, "tenants": int(sim.events["tenant_id"].n_unique()),
            "events_per_second": result.events_per_second}


def stage_features(run: Run) -> dict[str, Any]:
    from orchestration.pipeline import build_offline_features, materialize_online

    started = time.perf_counter()
    built = build_offline_features(settings=run.settings)
    offline = time.perf_counter() - started
    pushed = materialize_online(settings=run.settings)
    return {"seconds": time.perf_counter() - started, "offline_seconds": offline, "rows": built["rows"],
            "tenants": built["tenants"], "online_rows": pushed["rows"]}


def _train(run: Run, kind: str) -> dict[str, Any]:
    from models.common import CHURN_MODEL, TREND_MODEL
    from orchestration.pipeline import promotion_gate, train_challenger

    started = time.perf_counter()
    trained = train_challenger(kind, settings=run.settings)
    seconds = time.perf_counter() - started
    decision = promotion_gate(CHURN_MODEL if kind == "churn" else TREND_MODEL, settings=run.settings)
    metrics = trained["metrics"]
    return {"seconds": seconds, "cap": run.settings.model_max_training_rows, "promoted": decision.get("promoted"),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)}}


def stage_train_churn(run: Run) -> dict[str, Any]:
    return _train(run, "churn")


def stage_train_trend(run: Run) -> dict[str, Any]:
    return _train(run, "trend")


def stage_score(run: Run) -> dict[str, Any]:
    from orchestration.pipeline import score_tenants, tenant_chunks

    day = (EPOCH + dt.timedelta(days=run.days + 1)).date()
    started = time.perf_counter()
    chunks = tenant_chunks(score_date=day, settings=run.settings)
    rows = sum(score_tenants(chunk, day, settings=run.settings)["rows"] for chunk in chunks)
    return {"seconds": time.perf_counter() - started, "rows": rows, "tenants": sum(map(len, chunks)),
            "chunks": len(chunks)}


def _api_workload(run: Run, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(key, customer) of API_TENANTS tenants with churn_prediction and online features, drawn over all ranks.
    Healthcare tenants are left out: the land stage skips the contract (and with it the PHI encryption of their
    customer ids), so their tables hold clear ids the API, which encrypts the id it is sent, would not find."""
    from feature_store.online import open_online_store
    from shironzi.privacy.phi import customer_id_is_phi
    from shironzi.tenancy import TenantContext, get_registry

    store = open_online_store(settings=run.settings)
    try:
        customers: dict[str, str] = {}
        for row in store.iter_rows():
            if row.entity_key:
                customers.setdefault(row.tenant_id, row.entity_key)
    finally:
        store.close()
    registry = get_registry(run.settings)
    rank = {t: n for n, t in enumerate(run.ids()["ids"])}
    directory = registry.tenant_directory()
    eligible = sorted((t for t in customers if t in rank and registry.is_enabled(t, "churn_prediction")
                       and not customer_id_is_phi(directory[t].industry)), key=rank.__getitem__)
    picked = [eligible[i] for i in sorted(rng.choice(len(eligible), min(API_TENANTS, len(eligible)), replace=False))]
    admin = TenantContext.admin(actor=ADMIN, purpose="scale benchmark")
    return [(registry.issue_key(admin, t, scopes=["read"], label="scale benchmark")[1], customers[t]) for t in picked]


def stage_api(run: Run) -> dict[str, Any]:
    """`shironzi serve api` in a child process (one worker); requests one at a time over one connection."""
    import httpx

    from benchmarks.serving import _free_port, _wait_http

    work = _api_workload(run, np.random.default_rng(7))
    port = _free_port()
    env = {**os.environ, "SHIRONZI_API_RATE_LIMITS": json.dumps({p: 1e6 for p in ("free", "standard", "enterprise")})}
    with (run.home / "api.log").open("w") as log:
        server = subprocess.Popen([str(Path(sys.executable).with_name("shironzi")), "serve", "api", "--port",
                                   str(port), "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_http(f"http://127.0.0.1:{port}/readyz", 180, server)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

                def timed(key: str, customer: str) -> float:
                    started = time.perf_counter()
                    answer = client.get(f"/v1/customers/{customer}/churn", headers={"Authorization": f"Bearer {key}"})
                    if answer.status_code != 200:
                        raise SystemExit(f"api: {answer.status_code} {answer.text[:200]}")
                    return time.perf_counter() - started

                cold = [timed(*pair) for pair in work]
                warm = [timed(*pair) for _ in range(API_ROUNDS) for pair in work]
        finally:
            server.terminate()
            server.wait(timeout=30)
    p99 = lambda samples: float(np.percentile(samples, 99))  # noqa: E731
    return {"seconds": p99(warm), "cold_p99_seconds": p99(cold), "warm_p50_seconds": float(np.median(warm)),
            "tenants": len(work), "requests": len(cold) + len(warm)}


def _signed_in_operator(run: Run) -> Any:
    from streamlit.testing.v1 import AppTest

    from shironzi.tenancy import TenantContext, get_registry

    admin = TenantContext.admin(actor=ADMIN, purpose="scale benchmark")
    _, key = get_registry(run.settings).issue_key(admin, None, scopes=["admin"], label="scale benchmark")
    at = AppTest.from_file(str(ROOT / "apps" / "app.py"), default_timeout=300).run()
    at.text_input(key="api_key_input").input(key)
    at.button[0].click().run()
    if at.exception:
        raise SystemExit(f"dashboard sign-in: {at.exception[0].value}")
    return at


def stage_dashboard_search(run: Run) -> dict[str, Any]:
    """The operator's sidebar tenant search, through the app: a query typed, the app rerun, its matches offered."""
    at = _signed_in_operator(run)
    timings, offered = [], 0
    for n in range(10):
        query = f"scale-{(n * 7919) % run.tenants:06d}"[: 8 + n % 4]
        started = time.perf_counter()
        at.text_input(key="tenant_picker_query").input(query).run()
        timings.append(time.perf_counter() - started)
        if at.exception:
            raise SystemExit(f"dashboard search: {at.exception[0].value}")
        offered += len(at.selectbox(key="tenant_picker").options)
    return {"seconds": max(timings), "mean_seconds": sum(timings) / len(timings), "rows": offered}


def stage_dashboard_page(run: Run) -> dict[str, Any]:
    """Every page as the operator with the largest tenant picked: the slowest page's render (a rerun through
    the app, data reads included)."""
    from benchmarks.dashboard_render import PAGES

    at = _signed_in_operator(run)
    largest = run.ids()["largest"]
    at.text_input(key="tenant_picker_query").input(largest).run()
    at.selectbox(key="tenant_picker").set_value(largest).run()
    timings = {}
    for _, stem, _ in PAGES:
        started = time.perf_counter()
        at.switch_page(f"pages/{stem}.py").run()
        timings[stem] = time.perf_counter() - started
        if at.exception:
            raise SystemExit(f"dashboard page {stem}: {at.exception[0].value}")
    slowest = max(timings, key=timings.__getitem__)
    return {"seconds": timings[slowest], "slowest_page": slowest, "pages": timings}


def stage_tenant_search(run: Run) -> dict[str, Any]:
    from shironzi.tenancy import get_registry

    registry = get_registry(run.settings)
    timings, found = [], 0
    for n in range(20):
        query = f"scale-{(n * 7919) % run.tenants:06d}"[: 8 + n % 4]
        started = time.perf_counter()
        found += len(registry.search_tenants(query))
        timings.append(time.perf_counter() - started)
    return {"seconds": max(timings), "mean_seconds": sum(timings) / len(timings), "rows": found}


def stage_retention(run: Run) -> dict[str, Any]:
    from shironzi.audit.retention import enforce_retention

    started = time.perf_counter()
    result = enforce_retention(now=EPOCH + dt.timedelta(days=run.days + 2))
    return {"seconds": time.perf_counter() - started, "tenants": len(result.get("tenants", {}))}


def stage_erasure(run: Run) -> dict[str, Any]:
    from shironzi.audit.erasure import erase_subject
    from shironzi.tenancy import TenantContext

    state = run.ids()
    tenant = state["largest"]
    erased = int(state.get("erased_subjects", 0))  # a rerun (--force) erases the next customer, not nothing
    subject = f"c{erased + 1}"
    started = time.perf_counter()
    receipt = erase_subject(TenantContext.admin(actor=ADMIN, purpose="scale benchmark"), tenant, subject)
    seconds = time.perf_counter() - started
    run.save({**state, "erased_subjects": erased + 1})
    return {"seconds": seconds, "subject": subject, "tables": len(getattr(receipt, "tables", []) or []),
            "rows": sum(t["rows_deleted"] for t in receipt.tables)}


def stage_dbt_erased(run: Run) -> dict[str, Any]:
    seconds, result = _build(run)
    if result.full_refresh:
        raise SystemExit("the build after an erasure was a full refresh")
    return {"seconds": seconds, "full_refresh": result.full_refresh}


def stage_inventory(run: Run) -> dict[str, Any]:
    from shironzi.audit.queries import inventory

    started = time.perf_counter()
    found = inventory(run.ids()["largest"])
    return {"seconds": time.perf_counter() - started, "tables": len(found)}


STAGE_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    name: globals()[f"stage_{name}"] for name in STAGES
}


# -- the driver ----------------------------------------------------------------------------------------------------
def run_child(
    stage: str, home: Path, tenants: int, events: int, days: int, timeout: float | None = None
) -> dict[str, Any]:
    """One stage in its own process: the stage's own timing, the process's peak RSS, its outcome."""
    env = {**os.environ, "SHIRONZI_HOME": str(home), "SHIRONZI_LOG_FORMAT": "text", "SHIRONZI_LOG_LEVEL": "WARNING"}
    for name in ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    command = [sys.executable, __file__, "--stage", stage, "--home", str(home), "--tenants", str(tenants),
               "--events", str(events), "--days", str(days)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "wall_seconds": time.perf_counter() - started}
    wall = time.perf_counter() - started
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if child.returncode != 0 or line is None:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300], "wall_seconds": wall}
    out = json.loads(line.removeprefix("RESULT "))
    out["wall_seconds"] = wall
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", default="1000,10000,100000", help="comma-separated tenant counts")
    parser.add_argument("--events", type=int, default=10_000_000, help="events of history at every scale")
    parser.add_argument("--days", type=int, default=90, help="days the history spans")
    parser.add_argument("--out", type=Path, default=ROOT / ".shironzi-bench" / "scale_tenants")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in order")
    parser.add_argument("--force", action="store_true", help="rerun stages already measured")
    parser.add_argument("--stage-timeout", type=float, default=None, help="give up a stage after this many seconds")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "scale_tenants.png")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # a child: one stage
        out = STAGE_FUNCTIONS[args.stage](Run(args.home, int(args.tenants), args.events, args.days))
        peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        print("RESULT " + json.dumps({**out, "peak_rss_mib": peak / 1024}))
        return 0

    from benchmarks._machine import print_header

    print_header("scale: the same events over more tenants")
    scales = [int(s) for s in str(args.tenants).split(",")]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; expected some of {', '.join(STAGES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results: dict[str, dict[str, Any]] = json.loads(results_file.read_text()) if results_file.exists() else {}
    print(f"events {args.events:,} over {args.days} days; tenants {', '.join(f'{s:,}' for s in scales)}")
    for scale in scales:
        key = f"{scale}t_{args.events}e_{args.days}d"
        home = args.out / key
        home.mkdir(parents=True, exist_ok=True)
        done = results.setdefault(key, {})
        for stage in stages:
            if stage in done and "error" not in done[stage] and not args.force:
                continue
            print(f"  {scale:>7,} tenants  {stage:<14}", end="", flush=True)
            done[stage] = run_child(stage, home, scale, args.events, args.days, args.stage_timeout)
            results_file.write_text(json.dumps(results, indent=2))
            outcome = done[stage]
            print(f" {outcome.get('seconds', float('nan')):8.2f} s  peak {outcome.get('peak_rss_mib', 0):7.0f} MiB"
                  + (f"  FAILED: {outcome['error']}" if "error" in outcome else ""))
            if "error" in outcome and stage in NEEDED:
                break
    keys = [f"{s}t_{args.events}e_{args.days}d" for s in scales]
    print_table(results, keys, scales, stages)
    plot(results, keys, scales, stages, args.plot)
    return 0


def print_table(results: dict[str, dict[str, Any]], keys: list[str], scales: list[int], stages: list[str]) -> None:
    head = "".join(f"{f'{s:,} tenants':>22}" for s in scales)
    print(f"\n{'stage':<15}{head}{'ratio':>9}")
    print(f"{'':<15}" + "".join(f"{'seconds':>12}{'peak MiB':>10}" for _ in scales))
    for stage in stages:
        cells, seconds = [], []
        for key in keys:
            outcome = results.get(key, {}).get(stage, {})
            value = outcome.get("seconds")
            seconds.append(value)
            cells.append(f"{value:12.2f}{outcome.get('peak_rss_mib', 0):10.0f}" if value is not None else f"{'-':>22}")
        ratio = f"{seconds[-1] / seconds[0]:9.2f}" if seconds[0] and seconds[-1] is not None else f"{'-':>9}"
        print(f"{stage:<15}{''.join(cells)}{ratio}")
    for key, scale in zip(keys, scales, strict=True):
        stages_done = results.get(key, {})
        full = stages_done.get("dbt_full", {}).get("seconds")
        onboard = stages_done.get("dbt_onboard", {}).get("seconds")
        if full and onboard:
            print(f"{scale:,} tenants: dbt after onboarding 1 % = {100 * onboard / full:.1f} % of the full build")
    print(f"ratio = cost at {scales[-1]:,} tenants / cost at {scales[0]:,} tenants")


def plot(results: dict[str, dict[str, Any]], keys: list[str], scales: list[int], stages: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for stage in stages:
        points = [(s, results.get(k, {}).get(stage, {}).get("seconds")) for s, k in zip(scales, keys, strict=True)]
        points = [(s, v) for s, v in points if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=stage)
    ax.set(xscale="log", yscale="log", xlabel="tenants (same total events)", ylabel="seconds",
           title="Cost per stage against the number of tenants")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
