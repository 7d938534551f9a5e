"""The exactly-once stream ingestor: Kafka topic -> contract validation -> partitioned Delta bronze.

Protocol (exactly-once without Kafka transactions):

* A unit of replay is one topic partition; its app id is `{namespace}-{topic}-{partition}` (namespace
  `shironzi-ingest` by default) and its txn version is the last offset of that partition a commit covers.
* Each micro-batch (flushed at `max_batch` records or `max_wait_ms`) is validated as a whole and landed by
  `BronzeLander.land`: every data table it touches (pooled bronze per region, each dedicated tenant's
  bronze, quarantine per region) gets ONE commit carrying the txns of the batch's partitions, and the
  run-log row of the flush is committed LAST with the same txns.
* On start the ingestor resumes each assigned partition from the RUN LOG's txn version + 1 (never from
  Kafka group offsets, which are committed best effort for lag monitoring only). A crash between two
  commits is repaired on replay: each data table drops the rows whose offset is <= its own txn version for
  that partition, so nothing lands twice, and bronze also drops keys it already holds (re-produced events).
* Partitions are assigned explicitly (`worker`, `workers`: partitions p with p % workers == worker), so
  several ingestors share a topic without a consumer group (the bundled broker has none) and without
  conflicting: their txns have different app ids and their commits are blind appends.
* Or, on real Kafka, by a consumer group (`subscribe=True`): at EVERY assignment the ingestor again reads
  each new partition's position from the run log's txn, never from the group's committed offsets. A
  member gives a partition up only inside a poll, after its previous batch has landed; records of a
  partition revoked during a poll are dropped from that batch (the new owner reads them from the log's
  position), so a rebalance neither loses nor repeats an event.
* When the lake's object store fails (unreachable, read-only), the ingestor stops: it commits nothing
  more, waits (exponential backoff, capped at `stream_backoff_max_seconds`), then starts over from the
  run log's positions with fresh table caches, so the retry neither loses nor repeats an event. It keeps
  beating its `/healthz` (`SHIRONZI_HEALTH_PORT`) meanwhile: it is waiting, not hung.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from sqlalchemy.exc import SQLAlchemyError

from ingestion.bronze import (
    SEQ_COLUMN,
    UNIT_COLUMN,
    BronzeLander,
    LandingBatch,
    Ledger,
    Reconciliation,
    run_log_row,
    run_log_uri,
)
from ingestion.contracts import decode_json_records
from ingestion.stream.broker import resolve_bootstrap, topic_partitions
from ingestion.stream.kafka import ClientName, RecordBatch, consumer_lag, make_source
from ingestion.stream.quota import TIME_COLUMN, IngestQuota
from shironzi.errors import InvalidInputError, LakeError, ServiceUnavailableError
from shironzi.health import HealthServer, start_health_server
from shironzi.lake import txn_version
from shironzi.observability import stage, traced_context
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.invalidation import Invalidation, RegistryWatcher
from shironzi.tenancy.registry import get_registry

log = logging.getLogger("shironzi.ingestion.stream")

DEFAULT_NAMESPACE = "shironzi-ingest"
BACKOFF_INITIAL_SECONDS = 0.5


class StoreUnavailableError(Exception):
    """The lake failed under a landing or a position read: back off and start over (see `StreamIngestor.run`)."""


_STORE_ERRORS = (ServiceUnavailableError, LakeError, OSError)


def partition_app_id(topic: str, partition: int, *, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The Delta txn app id of one topic partition."""
    return f"{namespace}-{topic}-{partition}"


@dataclass(frozen=True)
class StreamOptions:
    """What to read and how to flush. `max_flushes`/`until_caught_up` bound a run (tests, demo)."""

    topic: str
    worker: int = 0
    workers: int = 1
    client: ClientName = "confluent"
    bootstrap: str | None = None
    max_batch: int = 50_000
    max_wait_ms: int = 1_000
    until_caught_up: bool = False
    max_flushes: int | None = None
    idle_timeout_s: float | None = None
    namespace: str = DEFAULT_NAMESPACE
    overlap: bool = True
    group_id: str | None = None
    subscribe: bool = False
    api_version: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.topic:
            raise InvalidInputError("a topic is required")
        if self.subscribe and not self.group_id:
            raise InvalidInputError("group mode needs a group id (--group)")
        if self.subscribe and self.workers != 1:
            raise InvalidInputError("use either a consumer group or --worker/--workers, not both")
        if self.workers < 1 or not 0 <= self.worker < self.workers:
            raise InvalidInputError(f"worker must be in [0, {self.workers}), got {self.worker}")
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise InvalidInputError("max_batch must be >= 1 and max_wait_ms >= 0")


@dataclass
class StreamRunResult:
    """What one ingestor run did."""

    run_id: str
    partitions: list[int]
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    flushes: int = 0
    seconds: float = 0.0
    totals: Reconciliation = field(default_factory=Reconciliation)

    @property
    def events_per_second(self) -> float:
        return self.totals.received / self.seconds if self.seconds > 0 else 0.0


class StreamIngestor:
    """Consumes its partitions of a topic and lands every micro-batch exactly once in bronze."""

    def __init__(
        self, options: StreamOptions, *, settings: Settings | None = None, lander: BronzeLander | None = None
    ) -> None:
        self.options = options
        self.settings = settings or get_settings()
        self.lander = lander or BronzeLander(settings=self.settings)
        # Above its plan's ingest quota a tenant's records are quarantined, never held back (ingestion.stream.quota)
        self.quota = IngestQuota(self.lander.tenants, settings=self.settings) if self.settings.ingest_quotas else None
        self.run_id = uuid.uuid4().hex
        self.worker_name = f"{options.worker}/{options.workers}"
        self.backoffs = 0  # how often this run waited out a failing object store
        # Set by the registry watcher when a tenant changed (a move's placement flip, a new tenant): the loop then
        # re-reads the tenant directory at once instead of at the next periodic refresh. (Correctness does not
        # hang on it: the lander also fences every commit on the moved tenants' epochs.)
        self.tenants_changed = threading.Event()

    def app_id(self, partition: int) -> str:
        return partition_app_id(self.options.topic, partition, namespace=self.options.namespace)

    def my_partitions(self, partition_count: int) -> list[int]:
        return [p for p in range(partition_count) if p % self.options.workers == self.options.worker]

    def resume_offsets(self, partitions: list[int]) -> dict[int, int]:
        """Per partition, the next offset to read: the run log's txn version + 1 (0 when never landed)."""
        uri = run_log_uri(self.settings)
        out = {}
        try:
            for partition in partitions:
                done = txn_version(uri, self.app_id(partition))
                out[partition] = 0 if done is None else done + 1
        except _STORE_ERRORS as exc:
            raise StoreUnavailableError(f"reading positions from {uri}: {exc}") from exc
        return out

    def run(self) -> StreamRunResult:
        """Consume and land until caught up / `max_flushes` / idle timeout (forever when none is set), backing
        off while the object store fails and starting over from the run log when it answers again."""
        health = start_health_server(
            self.settings.health_port, stale_after_s=self.settings.health_stale_seconds, name="ingest-stream"
        )
        result: StreamRunResult | None = None
        delay = BACKOFF_INITIAL_SECONDS
        watcher = RegistryWatcher(get_registry(self.settings), on_change=self._registry_changed)
        watcher.start()
        # The directory was read when the lander was built: a change committed between then and the watcher's
        # start reaches no watcher, so the loop re-reads it once now.
        self.tenants_changed.set()
        try:
            while True:
                try:
                    result = self._run_attempt(result, health)
                    return result
                except StoreUnavailableError as exc:
                    self.backoffs += 1
                    log.warning("object store failing (%s): committing nothing, retrying in %.1fs from the run "
                                "log's positions", exc, delay)
                    if health is not None:
                        health.beat(state="backing_off", backoffs=self.backoffs)
                    time.sleep(delay)
                    delay = min(delay * 2, self.settings.stream_backoff_max_seconds)
                    self.lander.forget_tables()  # a failed commit may have landed: re-read every txn and key
        finally:
            watcher.stop()
            if health is not None:
                health.stop()

    def _registry_changed(self, change: Invalidation) -> None:
        if change.everything or change.tenants:
            self.tenants_changed.set()

    def _run_attempt(self, previous: StreamRunResult | None, health: HealthServer | None) -> StreamRunResult:
        """One consume-and-land loop from the run log's positions (`previous`: the totals of earlier attempts)."""
        opts = self.options
        bootstrap = opts.bootstrap or resolve_bootstrap(self.settings)
        partitions = [] if opts.subscribe else self.my_partitions(topic_partitions(bootstrap, opts.topic))
        starts = self.resume_offsets(partitions)
        result = StreamRunResult(
            run_id=self.run_id, partitions=partitions, start_offsets=dict(starts), end_offsets=dict(starts)
        )
        if previous is not None:  # the run's figures span its attempts
            result.start_offsets.update(previous.start_offsets)
            result.totals.add(previous.totals)
            result.flushes = previous.flushes
        assigned: list[int] = []

        def on_assign(chosen: list[int]) -> dict[int, int]:  # group mode: positions from the Delta log
            found = self.resume_offsets(chosen)
            log.info("assigned %s of %s: resuming at %s (from the run log)", chosen, opts.topic, found)
            assigned[:] = chosen
            for partition, offset in found.items():
                result.start_offsets.setdefault(partition, offset)
                result.end_offsets[partition] = offset
            result.partitions = sorted({*result.partitions, *chosen})
            return found

        started = time.perf_counter()
        last_refresh = time.monotonic()
        idle_since = time.monotonic()
        with (
            stage("ingest_stream", topic=opts.topic, worker=self.worker_name, client=opts.client) as summary,
            make_source(opts.client, bootstrap, group_id=opts.group_id, api_version=opts.api_version) as source,
        ):
            if opts.subscribe:
                source.subscribe(opts.topic, group_id=str(opts.group_id), on_assign=on_assign)
            elif partitions:
                source.assign(opts.topic, partitions, start_offsets=starts)
            # Assign mode overlaps polling batch N+1 with landing batch N (one flush in flight, landed in order:
            # the poll is client work, the landing mostly native code that releases the GIL). Group mode lands
            # each batch before polling again: a member may give a partition up only inside a poll, after its
            # batch has landed.
            landing = _Landing(self, source, result, overlap=opts.overlap and not opts.subscribe)
            landing.submitted = result.flushes  # max_flushes counts the flushes of earlier attempts too
            try:
                while partitions or opts.subscribe:
                    if health is not None:
                        health.beat(state="consuming", flushes=result.flushes, backoffs=self.backoffs)
                    batch = source.poll_batch(max_records=opts.max_batch, timeout_s=opts.max_wait_ms / 1000)
                    landing.settle()
                    if len(batch):
                        landing.submit(batch)
                        idle_since = time.monotonic()
                    if opts.max_flushes is not None and landing.submitted >= opts.max_flushes:
                        break
                    if opts.until_caught_up and len(batch) < opts.max_batch and (assigned or not opts.subscribe):
                        lag = consumer_lag(source)
                        if not any(lag.values()):
                            break
                    if opts.idle_timeout_s is not None and time.monotonic() - idle_since > opts.idle_timeout_s:
                        break
                    if self.tenants_changed.is_set() or \
                            time.monotonic() - last_refresh > self.settings.stream_tenant_refresh_seconds:
                        self.tenants_changed.clear()
                        landing.settle()  # the lander is not shared with a flush in flight
                        self.refresh_tenants()
                        last_refresh = time.monotonic()
                landing.settle()
            finally:
                landing.close()
            result.seconds = time.perf_counter() - started
            summary.rows = result.totals.landed
            summary.table_version = result.totals.table_versions or None
            summary.extra.update(
                flushes=result.flushes,
                received=result.totals.received,
                quarantined=result.totals.quarantined,
                duplicates=result.totals.duplicates,
                backoffs=self.backoffs,
            )
        return result

    def refresh_tenants(self) -> bool:
        """Reload the tenant directory; while the registry is unreachable (a database restart) keep the last
        one and say so once per attempt: the next refresh reconnects (the pool drops dead connections)."""
        try:
            self.lander.refresh_tenants()
            if self.quota is not None:
                self.quota.refresh(self.lander.tenants)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("tenant directory refresh failed, registry unreachable (%s): keeping the last directory "
                        "of %d tenants, retrying", type(exc).__name__, len(self.lander.tenants))
            return False
        return True

    def flush(self, batch: RecordBatch) -> Reconciliation:
        """Validate and land one polled batch (one commit per table, then the run-log row); a failing object
        store surfaces as `StoreUnavailableError` (the run backs off and starts over)."""
        try:
            return self._flush(batch)
        except _STORE_ERRORS as exc:
            raise StoreUnavailableError(f"landing flush {self.lander.flushes}: {exc}") from exc

    def _flush(self, batch: RecordBatch) -> Reconciliation:
        opts = self.options
        started_at = datetime.now(UTC)
        frame = pl.DataFrame(
            {"_p": batch.partitions, SEQ_COLUMN: batch.offsets, TIME_COLUMN: batch.timestamps},
            schema={"_p": pl.Int32, SEQ_COLUMN: pl.Int64, TIME_COLUMN: pl.Int64},
        )
        frame = frame.with_columns(
            pl.format("{}/{}/{}", pl.lit(opts.topic), pl.col("_p"), pl.col(SEQ_COLUMN)).alias("position"),
            pl.format("{}-{}-{}", pl.lit(opts.namespace), pl.lit(opts.topic), pl.col("_p")).alias(
                UNIT_COLUMN
            ),
        )
        source = f"kafka:{opts.topic}"
        decoded = decode_json_records(batch.values, frame.get_column("position").to_list(), source=source)
        limit = None if self.quota is None else self.quota.limit(self.lander, decoded.records, frame.select(
            "position", UNIT_COLUMN, SEQ_COLUMN,
            pl.when(pl.col(TIME_COLUMN) >= 0).then(TIME_COLUMN).otherwise(int(started_at.timestamp() * 1000)),
        ))
        result = self.lander.validate(decoded, source=source, limit=limit)
        landing = LandingBatch.build(
            result,
            records=decoded.records.select("tenant_id", "event_id", "position"),
            origins=frame.select("position", UNIT_COLUMN, SEQ_COLUMN),
        )
        ranges = frame.group_by("_p").agg(
            pl.col(SEQ_COLUMN).min().alias("first"), pl.col(SEQ_COLUMN).max().alias("last")
        )
        positions = {str(p): [first, last] for p, first, last in ranges.sort("_p").iter_rows()}
        number = self.lander.flushes + 1

        def ledger_rows(counts: Reconciliation) -> Any:
            return run_log_row(
                run_id=self.run_id,
                flush=number,
                source_kind="stream",
                source_name=opts.topic,
                worker=self.worker_name,
                started_at=started_at,
                counts=counts,
                status="succeeded",
                positions={"topic": opts.topic, "offsets": positions},
            )

        with (  # the flush joins the trace of its earliest traced record (POST /v1/events -> bronze commit)
            traced_context(batch.first_traceparent()),
            stage("ingest_stream_flush", topic=opts.topic, worker=self.worker_name) as summary,
        ):
            counts = self.lander.land(
                landing,
                ledger=Ledger(run_log_uri(self.settings), ledger_rows),
                metadata={"shironzi.run_id": self.run_id, "shironzi.source": source},
            )
            summary.rows = counts.landed
            summary.table_version = counts.table_versions or None
            summary.extra.update(
                received=counts.received,
                quarantined=counts.quarantined,
                duplicates=counts.duplicates,
                recovered=counts.recovered,
                quarantined_by_reason=counts.quarantined_by_reason,
            )
        return counts


class _Landing:
    """At most one batch landing at a time, in poll order; with `overlap` it lands in a worker thread while
    the next batch is polled. `settle` waits for it and books its counts (and the group offsets, for lag
    monitoring only); a landing error surfaces there."""

    def __init__(self, ingestor: StreamIngestor, source: Any, result: StreamRunResult, *, overlap: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.ingestor, self.source, self.result = ingestor, source, result
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shironzi-land") if overlap else None
        self.pending: Any = None
        self.batch: RecordBatch | None = None
        self.submitted = 0

    def submit(self, batch: RecordBatch) -> None:
        self.settle()
        self.submitted += 1
        self.batch = batch
        if self.pool is None:
            self._book(self.ingestor.flush(batch))
        else:
            self.pending = self.pool.submit(self.ingestor.flush, batch)

    def settle(self) -> None:
        if self.pending is not None:
            future, self.pending = self.pending, None
            self._book(future.result())

    def _book(self, counts: Reconciliation) -> None:
        assert self.batch is not None
        offsets = self.batch.next_offsets()
        self.batch = None
        self.result.totals.add(counts)
        self.result.flushes += 1
        self.result.end_offsets.update(offsets)
        self.source.commit_offsets(offsets)  # lag monitoring only

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # a landing in flight finishes (or fails) before the source closes


def ingest_stream(options: StreamOptions, *, settings: Settings | None = None) -> StreamRunResult:
    """Run one stream ingestor with these options (see `StreamIngestor`)."""
    return StreamIngestor(options, settings=settings).run()
