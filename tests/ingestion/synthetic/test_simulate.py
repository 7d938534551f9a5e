"""The synthetic generator: determinism, realism (skew, seasonality, churn), ground truth, bad records."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ingestion.contracts import decode_json_records, tenants_frame, validate_batch
from ingestion.synthetic import (
    BAD_KINDS,
    EXPECTED_REASON,
    Simulation,
    iter_payload_batches,
    produce_to,
    simulate,
    tenant_sizes,
    write_ground_truth,
    write_landing_files,
)
from shironzi.errors import InvalidInputError
from shironzi.settings import get_settings

TENANTS = [
    ("shop-a", "ecommerce"),
    ("clinic-b", "healthcare"),
    ("school-c", "education"),
    ("shop-d", "ecommerce"),
]
ACTIVE = tenants_frame([(t, i, "active") for t, i in TENANTS])
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(TENANTS, customers=2_400, days=240, start=date(2023, 1, 2), seed=11)


@pytest.fixture(scope="module")
def bad_sim() -> Simulation:
    return simulate(TENANTS, customers=300, days=45, start=date(2023, 3, 1), seed=5, bad_share=0.03)


def auc(labels: pl.Series, scores: pl.Series) -> float:
    ranks = scores.rank("average").to_numpy()
    y = labels.to_numpy().astype(bool)
    positives, negatives = y.sum(), (~y).sum()
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def test_same_seed_gives_identical_output_and_another_seed_does_not(tmp_path: Path) -> None:
    first = simulate(TENANTS, customers=200, days=20, start=date(2024, 1, 1), seed=3, bad_share=0.05)
    again = simulate(TENANTS, customers=200, days=20, start=date(2024, 1, 1), seed=3, bad_share=0.05)
    other = simulate(TENANTS, customers=200, days=20, start=date(2024, 1, 1), seed=4, bad_share=0.05)
    assert first.events.equals(again.events)
    assert first.snapshots.equals(again.snapshots) and first.customers.equals(again.customers)
    assert first.bad_plan.equals(again.bad_plan)
    assert not first.events.equals(other.events)
    m1 = write_landing_files(first, tmp_path / "a", fmt="jsonl")
    m2 = write_landing_files(again, tmp_path / "b", fmt="jsonl")
    assert m1.files == m2.files
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in m1.files)


def test_tenant_sizes_are_zipf_skewed() -> None:
    sizes = tenant_sizes(40, 40_000, zipf_exponent=1.1, rng=np.random.default_rng(1))
    assert sizes.sum() == 40_000 and sizes.min() >= 1
    ordered = np.sort(sizes)[::-1]
    assert ordered[0] > 8 * np.median(sizes)  # a few huge tenants ...
    assert ordered[:4].sum() > 0.4 * sizes.sum()  # ... hold a large share
    assert (sizes < sizes.mean()).sum() >= 30  # and most are small


def test_weekly_seasonality_is_visible(sim: Simulation) -> None:
    daily = (
        sim.events.join(pl.DataFrame(TENANTS, schema=["tenant_id", "industry"], orient="row"), on="tenant_id")
        .group_by("industry", pl.col("event_time").dt.date().alias("day"))
        .len()
        .with_columns((pl.col("day").dt.weekday() >= 6).alias("weekend"))
        .group_by("industry", "weekend")
        .agg(pl.col("len").mean())
    )
    mean = {(r["industry"], r["weekend"]): r["len"] for r in daily.iter_rows(named=True)}
    assert mean[("healthcare", True)] < 0.6 * mean[("healthcare", False)]  # clinics are quiet at weekends
    assert mean[("ecommerce", True)] > 1.1 * mean[("ecommerce", False)]  # shops are busier


def test_churned_customers_stop_emitting_after_their_churn_date(sim: Simulation) -> None:
    churned = sim.customers.filter(pl.col("churn_date") >= sim.start)
    assert churned.height > 100
    events = sim.events.join(churned, on=["tenant_id", "customer_id"]).with_columns(
        pl.col("event_time").dt.date().alias("day")
    )
    assert events.filter(pl.col("day") > pl.col("churn_date")).height == 0
    terminal = events.filter(
        pl.col("event_type").is_in(["account_closed", "patient_disenrolled", "student_withdrew"])
    )
    said_goodbye = set(terminal.select("tenant_id", "customer_id").iter_rows())
    kinds = {
        (t, c): kind for t, c, kind in churned.select("tenant_id", "customer_id", "churn_kind").iter_rows()
    }
    assert said_goodbye and all(kinds[key] == "terminal_event" for key in said_goodbye)
    assert (terminal.get_column("day") == terminal.get_column("churn_date")).all()
    assert churned.filter(pl.col("churn_kind") == "silent").height > 0


def test_churn_hazard_depends_on_observable_behaviour(sim: Simulation) -> None:
    truth = sim.snapshots.filter("horizon_complete")
    snapshot_day = truth.get_column("snapshot_date").unique().sort()[10]
    at_day = truth.filter(pl.col("snapshot_date") == snapshot_day)
    window = (
        sim.events.filter(
            pl.col("event_time").dt.date().is_between(snapshot_day - timedelta(days=29), snapshot_day)
        )
        .group_by("tenant_id", "customer_id")
        .len("events_30d")
    )
    joined = at_day.join(window, on=["tenant_id", "customer_id"], how="left").with_columns(
        pl.col("events_30d").fill_null(0)
    )
    means = dict(joined.group_by("churned_within_30d").agg(pl.col("events_30d").mean()).iter_rows())
    assert means[True] < 0.6 * means[False]  # churners were much less active in the prior 30 days
    assert auc(truth.get_column("churned_within_30d"), truth.get_column("churn_probability_30d")) > 0.75
    assert 0.01 < truth.get_column("churned_within_30d").mean() < 0.2


def test_ground_truth_is_written_outside_the_lake(home: Path, sim: Simulation) -> None:
    target = write_ground_truth(sim)
    settings = get_settings()
    assert target == home / "ground_truth"
    assert not str(target).startswith(settings.resolved_lake_uri)
    customers = pl.read_parquet(target / "customers.parquet")
    snapshots = pl.read_parquet(target / "churn_snapshots.parquet")
    assert customers.height == 2_400 and customers.columns[:5] == [
        "tenant_id",
        "customer_id",
        "industry",
        "signup_date",
        "churn_date",
    ]
    assert {"snapshot_date", "churn_probability_30d", "churned_within_30d", "horizon_complete"} <= set(
        snapshots.columns
    )
    meta = json.loads((target / "simulation.json").read_text())
    assert meta["seed"] == 11 and "churned_within_30d" in meta["label_definition"]


def test_every_generated_valid_event_passes_validation(sim: Simulation) -> None:
    result = validate_batch(sim.events.drop("seq"), tenants=ACTIVE, now=NOW, source="synthetic")
    assert result.quarantined.num_rows == 0, result.counts_by_reason
    assert result.valid.num_rows == sim.events.height and result.duplicates_in_batch == 0
    seen = set(result.valid.column("event_type").to_pylist())
    assert {
        "customer_signed_up",
        "order_placed",
        "patient_registered",
        "appointment_missed",
        "payment_made",
    } <= seen


def test_every_bad_kind_is_injected_in_the_requested_count(bad_sim: Simulation) -> None:
    counts = bad_sim.bad_counts()
    assert set(counts) == set(BAD_KINDS)
    total = round(0.03 * bad_sim.events.height)
    assert sum(counts.values()) == total
    assert max(counts.values()) - min(counts.values()) <= 1


def expected_reasons(counts: dict[str, int]) -> tuple[dict[str, int], int]:
    reasons = {EXPECTED_REASON[k]: n for k, n in counts.items() if EXPECTED_REASON[k]}
    return reasons, counts.get("duplicate", 0)


def tally(results: list[Any]) -> tuple[dict[str, int], int, int]:
    reasons: dict[str, int] = {}
    for result in results:
        assert result.reconciles()
        for code, n in result.counts_by_reason.items():
            reasons[code] = reasons.get(code, 0) + n
    return reasons, sum(r.duplicates_in_batch for r in results), sum(r.valid.num_rows for r in results)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_bad_kind_lands_in_its_reason_code_from_files(tmp_path: Path, fmt: str) -> None:
    kinds = [k for k in BAD_KINDS if fmt == "jsonl" or k != "malformed_json"]
    sim = simulate(
        TENANTS, customers=300, days=45, start=date(2023, 3, 1), seed=5, bad_share=0.03, bad_kinds=kinds
    )
    manifest = write_landing_files(
        sim,
        tmp_path,
        fmt=fmt,
        batch_days=21,  # type: ignore[arg-type]
        manifest_path=tmp_path / "manifest.json",
    )
    assert json.loads((tmp_path / "manifest.json").read_text())["bad_by_kind"] == sim.bad_counts()
    results = []
    for name in manifest.files:
        path = tmp_path / name
        if fmt == "jsonl":
            lines = path.read_text().splitlines()
            records: Any = decode_json_records(
                lines, [f"{name}:{i + 1}" for i in range(len(lines))], source="b"
            )
        elif fmt == "csv":
            records = pl.read_csv(path, infer_schema=False)
        else:
            records = pl.read_parquet(path)
        results.append(validate_batch(records, tenants=ACTIVE, now=NOW, source="batch"))
    reasons, duplicates, valid = tally(results)
    assert (reasons, duplicates) == expected_reasons(sim.bad_counts())
    assert valid == sim.events.height
    assert manifest.records_written == sim.events.height + sum(sim.bad_counts().values())


def test_each_bad_kind_lands_in_its_reason_code_from_payload_batches(bad_sim: Simulation) -> None:
    results = [
        validate_batch(
            decode_json_records(batch.values, batch.positions, source="k"),
            tenants=ACTIVE,
            now=NOW,
            source="k",
        )
        for batch in iter_payload_batches(bad_sim, batch_size=500)
    ]
    reasons, duplicates, valid = tally(results)
    assert (reasons, duplicates) == expected_reasons(bad_sim.bad_counts())
    assert valid == bad_sim.events.height


def test_csv_cannot_carry_malformed_json(tmp_path: Path, bad_sim: Simulation) -> None:
    with pytest.raises(InvalidInputError, match="cannot be written as csv"):
        write_landing_files(bad_sim, tmp_path, fmt="csv")
    assert not any(tmp_path.iterdir())


class RecordingProducer:
    """A stand-in Kafka producer (the producer itself is another component): records what it is sent."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.flushed = 0
        self.polls = 0
        self._full_once = True

    def produce(self, topic: str, *, key: bytes, value: bytes) -> None:
        if self._full_once and len(self.messages) == 10:
            self._full_once = False
            raise BufferError("queue full")
        self.messages.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0

    def flush(self, *args: Any) -> int:
        self.flushed += 1
        return 0


def test_produce_to_sends_every_payload_keyed_by_tenant(bad_sim: Simulation) -> None:
    producer = RecordingProducer()
    sent = produce_to(producer, "events", bad_sim, batch_size=1_000)
    assert sent == len(producer.messages) == bad_sim.events.height + sum(bad_sim.bad_counts().values())
    assert producer.flushed == 1 and producer.polls >= 1
    assert {key.decode() for _, key, _ in producer.messages} == {t for t, _ in TENANTS}
    assert {topic for topic, _, _ in producer.messages} == {"events"}


def test_target_events_scales_the_volume() -> None:
    small = simulate(TENANTS[:2], customers=400, days=60, start=date(2024, 1, 1), seed=2, target_events=5_000)
    large = simulate(
        TENANTS[:2], customers=400, days=60, start=date(2024, 1, 1), seed=2, target_events=40_000
    )
    assert 2_500 < small.events.height < 10_000
    assert 20_000 < large.events.height < 80_000


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="same tenant_id twice"):
        simulate([("a", "ecommerce"), ("a", "education")], customers=10, days=2)
    with pytest.raises(InvalidInputError, match="no synthetic profile"):
        simulate([("a", "retail")], customers=10, days=2)
    with pytest.raises(InvalidInputError, match="unknown bad record kind"):
        simulate([("a", "ecommerce")], customers=10, days=2, bad_share=0.1, bad_kinds=["gremlins"])
