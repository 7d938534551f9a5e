"""Getting a `Simulation` out: landing files (CSV, JSONL, Parquet), batches of JSON payloads for a Kafka
producer, and the ground truth (kept apart from the lake, under `{SHIRONZI_HOME}/ground_truth/`).

Bad records planned by `simulate(bad_share=...)` are materialised here, per format, right after the event
they were copied from (so an injected duplicate always lands in the same file or payload batch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import polars as pl

from ingestion.contracts import (
    FUTURE_TIMESTAMP,
    MALFORMED_JSON,
    MISSING_FIELD,
    RECORD_FIELDS,
    UNKNOWN_EVENT_TYPE,
    UNKNOWN_TENANT,
    WRONG_TYPE,
)
from ingestion.synthetic.simulate import BAD_KINDS, Simulation
from shironzi.errors import InvalidInputError
from shironzi.settings import get_settings

OutputFormat = Literal["csv", "jsonl", "parquet"]
WireFormat = Literal["csv", "jsonl", "parquet", "payloads"]
FilePer = Literal["tenant_batch", "day"]

# Which injected kind ends up under which quarantine reason code (duplicates are dropped and counted instead).
EXPECTED_REASON: dict[str, str | None] = {
    "malformed_json": MALFORMED_JSON,
    "missing_field": MISSING_FIELD,
    "wrong_type": WRONG_TYPE,
    "unknown_tenant": UNKNOWN_TENANT,
    "unknown_event_type": UNKNOWN_EVENT_TYPE,
    "future_timestamp": FUTURE_TIMESTAMP,
    "duplicate": None,
}
_TABULAR_KINDS = tuple(k for k in BAD_KINDS if k != "malformed_json")
APPLICABLE_KINDS: dict[str, tuple[str, ...]] = {
    "jsonl": BAD_KINDS,
    "payloads": BAD_KINDS,
    "csv": _TABULAR_KINDS,
    "parquet": _TABULAR_KINDS,
}
_ISO_MS = "%Y-%m-%dT%H:%M:%S%.3fZ"
_NUMBER_SENTINEL, _TRUE_SENTINEL = "__shironzi_number__", "__shironzi_true__"
_FOREIGN_TYPE = {"ecommerce": "lesson_completed", "healthcare": "order_placed", "education": "portal_login"}


def _bad_rows(sim: Simulation, fmt: WireFormat) -> pl.DataFrame:
    """The bad copies for one format, as wire columns plus `_seq`, `_day`, `_key`, `_bad_kind`."""
    planned = set(sim.bad_plan.get_column("kind").unique().to_list())
    not_here = planned - set(APPLICABLE_KINDS[fmt])
    if not_here:
        raise InvalidInputError(
            f"bad record kind(s) {sorted(not_here)} cannot be written as {fmt}; "
            f"use one of {', '.join(APPLICABLE_KINDS[fmt])}"
        )
    industry = pl.DataFrame(
        {"tenant_id": [t.tenant_id for t in sim.tenants], "_industry": [t.industry for t in sim.tenants]}
    )
    base = (
        sim.bad_plan.join(_valid_rows(sim), left_on="seq", right_on="_seq", how="inner")
        .rename({"seq": "_seq", "kind": "_bad_kind"})
        .join(industry, on="tenant_id", how="left")
    )
    kind, variant = pl.col("_bad_kind"), pl.col("variant")
    future = sim.end + timedelta(days=3650)
    future_text = (
        pl.lit(future.isoformat() + "T") + (variant % 24).cast(pl.String).str.zfill(2) + pl.lit(":00:00.000Z")
    )
    is_json = fmt in ("jsonl", "payloads")
    wrong_variants = 4 if is_json else 2
    wrong = variant % wrong_variants
    missing = variant % 4

    def col(name: str) -> pl.Expr:
        return pl.col(name)

    renamed_id = col("event_id") + "-bad"
    return base.select(
        pl.when(kind == "unknown_tenant")
        .then(pl.lit("ghost-") + (variant % 100_000).cast(pl.String))
        .otherwise(col("tenant_id"))
        .alias("tenant_id"),
        pl.when(kind == "duplicate")
        .then(col("event_id"))
        .when((kind == "missing_field") & (missing == 0))
        .then(None)
        .otherwise(renamed_id)
        .alias("event_id"),
        pl.when((kind == "missing_field") & (missing == 1))
        .then(None)
        .when((kind == "wrong_type") & (wrong == 0) & is_json)
        .then(pl.lit(_NUMBER_SENTINEL))
        .otherwise(col("customer_id"))
        .alias("customer_id"),
        pl.when((kind == "missing_field") & (missing == 2))
        .then(None)
        .when((kind == "unknown_event_type") & (variant % 2 == 0))
        .then(pl.lit("teleported"))
        .when(kind == "unknown_event_type")
        .then(col("_industry").replace_strict(_FOREIGN_TYPE, default="teleported"))
        .otherwise(col("event_type"))
        .alias("event_type"),
        pl.when((kind == "missing_field") & (missing == 3))
        .then(None)
        .when(kind == "future_timestamp")
        .then(future_text)
        .when((kind == "wrong_type") & (wrong == 1) & (fmt != "parquet"))
        .then(pl.lit("next tuesday"))
        .when((kind == "wrong_type") & (wrong == 3))
        .then(pl.lit(_TRUE_SENTINEL))
        .otherwise(col("event_time"))
        .alias("event_time"),
        "amount",
        "currency",
        pl.when((kind == "wrong_type") & (wrong == 2))
        .then(pl.lit("[1,2,3]"))
        .when((kind == "wrong_type") & (wrong == 1) & (fmt == "parquet"))
        .then(pl.lit("not json"))
        .when((kind == "wrong_type") & (wrong == 0) & ~pl.lit(is_json))
        .then(pl.lit("[1,2,3]"))
        .otherwise(col("properties"))
        .alias("properties"),
        "_seq",
        "_day",
        "_key",
        "_bad_kind",
        "variant",
    )


def _valid_rows(sim: Simulation) -> pl.DataFrame:
    return sim.events.select(
        *(pl.col(c).dt.to_string(_ISO_MS).alias(c) if c == "event_time" else c for c in RECORD_FIELDS),
        pl.col("seq").alias("_seq"),
        pl.col("event_time").dt.date().alias("_day"),
        pl.col("tenant_id").alias("_key"),
    )


def wire_frame(sim: Simulation, *, fmt: WireFormat) -> pl.DataFrame:
    """Every record to emit for one format, valid and bad, in emission order.

    Columns: RECORD_FIELDS (event_time as ISO-8601 text, properties as JSON text) plus `_seq` (the source
    event), `_day` (its event date), `_key` (its tenant, the Kafka key), `_bad_kind` (null for valid rows),
    `_line` (JSON formats only: the exact payload text).
    """
    valid = _valid_rows(sim).with_columns(
        pl.lit(None, pl.String).alias("_bad_kind"),
        pl.lit(0).alias("_copy"),
        pl.lit(None, pl.Int64).alias("variant"),
    )
    bad = _bad_rows(sim, fmt).with_columns(pl.lit(1).alias("_copy"))
    frame = pl.concat([valid, bad.select(valid.columns)]).sort("_seq", "_copy", maintain_order=True)
    if fmt in ("jsonl", "payloads"):
        frame = frame.with_columns(_json_lines(frame).alias("_line"))
    return frame.drop("_copy")


def _json_lines(frame: pl.DataFrame) -> pl.Expr:
    """One JSON object per row (properties embedded as an object), with bad-record sentinels resolved."""
    head = pl.struct(*RECORD_FIELDS[:-1]).struct.json_encode()
    line = head.str.head(-1) + pl.lit(',"properties":') + pl.col("properties").fill_null("null") + pl.lit("}")
    line = line.str.replace_many([f'"{_NUMBER_SENTINEL}"', f'"{_TRUE_SENTINEL}"'], ["12345", "true"])
    malformed = pl.col("_bad_kind") == "malformed_json"
    variant = pl.col("variant") % 3
    return (
        pl.when(malformed & (variant == 0))
        .then(line.str.head(line.str.len_chars() // 2))
        .when(malformed & (variant == 1))
        .then(pl.lit("not json at all"))
        .when(malformed)
        .then(pl.lit('{"tenant_id": ') + pl.col("_key").fill_null("") + pl.lit(", oops}"))
        .otherwise(line)
    )


@dataclass
class LandingManifest:
    """What `write_landing_files` wrote, and which bad records it injected (kind -> count)."""

    out_dir: str
    format: str
    file_per: str
    files: list[str] = field(default_factory=list)
    valid_events: int = 0
    records_written: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    expected_reason_by_kind: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary name and rename, so a watcher never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_landing_files(
    sim: Simulation,
    out_dir: str | Path,
    *,
    fmt: OutputFormat = "jsonl",
    file_per: FilePer = "tenant_batch",
    batch_days: int = 7,
    manifest_path: str | Path | None = None,
    on_file: Callable[[int], None] | None = None,
) -> LandingManifest:
    """Write the simulation as landing files and return (and optionally save) the manifest.

    `file_per="tenant_batch"`: `{out}/{tenant_id}/events-{first day}-s{seed}.{ext}`, one per tenant per
    `batch_days` days; `file_per="day"`: `{out}/events-{day}-s{seed}.{ext}` with all tenants. Re-running
    with the same seed rewrites identical files. `on_file(records)` is called after each file.
    """
    if fmt not in ("csv", "jsonl", "parquet"):
        raise InvalidInputError(f"unknown landing format {fmt!r}; use csv, jsonl or parquet")
    if file_per not in ("tenant_batch", "day"):
        raise InvalidInputError(f"unknown file_per {file_per!r}; use tenant_batch or day")
    if batch_days < 1:
        raise InvalidInputError("batch_days must be at least 1")
    out = Path(out_dir)
    frame = wire_frame(sim, fmt=fmt)
    window = ((pl.col("_day") - pl.lit(sim.start)).dt.total_days() // batch_days) * batch_days
    group_day = pl.lit(sim.start) + pl.duration(days=window) if file_per == "tenant_batch" else pl.col("_day")
    frame = frame.with_columns(group_day.alias("_file_day"))
    keys = ["_key", "_file_day"] if file_per == "tenant_batch" else ["_file_day"]
    manifest = LandingManifest(
        out_dir=str(out),
        format=fmt,
        file_per=file_per,
        valid_events=sim.events.height,
        bad_by_kind=sim.bad_counts(),
        expected_reason_by_kind={k: EXPECTED_REASON[k] for k in sim.bad_counts()},
    )
    for part in frame.partition_by(keys, maintain_order=True):
        file_day = part.item(0, "_file_day").strftime("%Y%m%d")
        name = f"events-{file_day}-s{sim.seed}.{fmt}"
        path = out / part.item(0, "_key") / name if file_per == "tenant_batch" else out / name
        _atomic_write(path, partial(_write_part, part, fmt=fmt))
        manifest.files.append(str(path.relative_to(out)))
        manifest.records_written += part.height
        if on_file is not None:
            on_file(part.height)
    if manifest_path is not None:
        target = Path(manifest_path)
        _atomic_write(target, lambda tmp: tmp.write_text(json.dumps(manifest.to_dict(), indent=2)))
    return manifest


def _write_part(part: pl.DataFrame, path: Path, *, fmt: OutputFormat) -> None:
    if fmt == "jsonl":
        path.write_text("\n".join(part.get_column("_line").to_list()) + "\n", encoding="utf-8")
    elif fmt == "csv":
        part.select(RECORD_FIELDS).write_csv(path)
    else:
        part.select(
            *RECORD_FIELDS[:4],
            pl.col("event_time")
            .str.to_datetime(_ISO_MS, time_zone="UTC", strict=False)
            .dt.cast_time_unit("us"),
            *RECORD_FIELDS[5:],
        ).write_parquet(path)


@dataclass(frozen=True)
class PayloadBatch:
    """One batch for a Kafka producer: `keys[i]` (the tenant id) and `values[i]` (JSON bytes) per message."""

    keys: list[bytes]
    values: list[bytes]
    positions: list[str]

    def __len__(self) -> int:
        return len(self.values)


def iter_payload_batches(sim: Simulation, *, batch_size: int = 10_000) -> Iterator[PayloadBatch]:
    """Yield the simulation as JSON payload batches of about `batch_size` events each (bad copies included,
    always in the same batch as the event they copy)."""
    if batch_size < 1:
        raise InvalidInputError("batch_size must be at least 1")
    frame = wire_frame(sim, fmt="payloads").with_columns((pl.col("_seq") // batch_size).alias("_batch"))
    for number, part in enumerate(frame.partition_by("_batch", maintain_order=True)):
        positions = (pl.lit(f"sim-s{sim.seed}/{number}/") + pl.int_range(pl.len()).cast(pl.String)).alias("p")
        yield PayloadBatch(
            keys=part.get_column("_key").cast(pl.Binary).to_list(),
            values=part.get_column("_line").cast(pl.Binary).to_list(),
            positions=part.select(positions).get_column("p").to_list(),
        )


class Producer(Protocol):
    """Anything with confluent-kafka's produce/flush shape."""

    def produce(self, topic: str, *, key: bytes, value: bytes) -> Any: ...

    def flush(self, *args: Any) -> Any: ...


def produce_to(
    producer: Producer,
    topic: str,
    sim: Simulation,
    *,
    batch_size: int = 10_000,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Send every payload of the simulation to `topic`, keyed by tenant id; flushes at the end.

    Returns the number of messages produced. A full local queue (BufferError) is drained with
    `producer.poll` when the producer has one, then the message is retried."""
    sent = 0
    poll = getattr(producer, "poll", None)
    for batch in iter_payload_batches(sim, batch_size=batch_size):
        for key, value in zip(batch.keys, batch.values, strict=True):
            while True:
                try:
                    producer.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    if poll is None:
                        raise
                    poll(0.5)
            sent += 1
        if poll is not None:
            poll(0)
        if on_batch is not None:
            on_batch(len(batch))
    producer.flush()
    return sent


def default_ground_truth_dir() -> Path:
    """`{SHIRONZI_HOME}/ground_truth`: beside the lake, never inside it."""
    return get_settings().home / "ground_truth"


def write_ground_truth(sim: Simulation, directory: str | Path | None = None) -> Path:
    """Write `customers.parquet`, `churn_snapshots.parquet` and `simulation.json` (run parameters and the
    label definition); the pipeline never reads this directory. Returns the directory."""
    target = Path(directory) if directory is not None else default_ground_truth_dir()
    _atomic_write(target / "customers.parquet", lambda tmp: sim.customers.write_parquet(tmp))
    _atomic_write(target / "churn_snapshots.parquet", lambda tmp: sim.snapshots.write_parquet(tmp))
    meta = {
        "seed": sim.seed,
        "start": sim.start.isoformat(),
        "end": sim.end.isoformat(),
        "days": sim.days,
        "tenants": [asdict(t) for t in sim.tenants],
        "events": sim.events.height,
        "bad_by_kind": sim.bad_counts(),
        "params": sim.params,
        "label_definition": (
            "churn_snapshots: one row per customer signed up and not churned by the end of snapshot_date s. "
            "churn_probability_30d = 1 - (1 - hazard_next_day)^30 where hazard_next_day is the true churn "
            "hazard "
            "for day s+1 given behaviour up to the end of s; churned_within_30d = churn_date in [s+1, s+30]. "
            "Oracle AUC = ROC AUC of churn_probability_30d against churned_within_30d over rows with "
            "horizon_complete; score models on the same rows with features from events dated <= s."
        ),
    }
    _atomic_write(
        target / "simulation.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=2, default=str))
    )
    return target
