"""The ingest quota on the stream: a token bucket per tenant over each batch's produce times, vectorised.

**The choice: quarantine the excess, don't slow it.** A partition is shared by many tenants and Kafka hands it
out in offset order, so holding one tenant's records back holds back every record behind them: slowing the
noisy tenant would raise every other tenant's latency on its partitions. Instead, a valid record above its
tenant's quota goes to quarantine with reason `quota_exceeded` in the same flush (landed + quarantined still
equals produced; nothing is refused silently), and `shironzi ingest replay-quarantine --reason quota_exceeded`
lands it once the tenant's quota has risen (`still_over_quota`).

**The bucket.** Rate r events/s, `burst` tokens (`shironzi.tenancy.quotas.plan_quota`). Time is each record's
produce timestamp (the broker's; the wall clock when it gave none), so an ingestor catching up a backlog judges
the rate at which the tenant produced, not the rate at which it reads. Per tenant, in input order, with
L_k = (tokens at the tenant's first record) + r * (t_k - t_first) (timestamps made non-decreasing), the number
admitted after record i (from 0) is A_i = i + min(1, min_{k<=i}(floor(L_k) - k)): the closed form of "admit
while a token is left", one cumulative minimum over the batch instead of a loop over records. The cap at
`burst` applies between batches (the carried state); inside one batch the refill is not capped, which can only
admit more than the strict bucket (by at most r times the tenant's idle time inside one batch).

**Exactly once.** The bucket lives in memory, so a retry after a crash may judge a record differently. Records
that an interrupted landing already decided keep its decision (`BronzeLander.landed_in_bronze`): a record it
put in bronze stays landed, one it quarantined stays quarantined, so none lands twice or is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import polars as pl
import pyarrow as pa

from ingestion.bronze import SEQ_COLUMN, UNIT_COLUMN, BronzeLander
from ingestion.contracts import QUARANTINE_SCHEMA, QUOTA_EXCEEDED, ValidationResult
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.quotas import quota_frame

TIME_COLUMN = "_ts"  # epoch milliseconds of the record's produce time
_UNLIMITED = 1e15
_REASON = "tenant {} is above its ingest quota of {} events/s (burst {})"
QUOTA_IN_REASON = re.compile(r"ingest quota of ([0-9.eE+]+) events/s")


class IngestQuota:
    """Token buckets of every tenant an ingestor has seen (state carried between its batches)."""

    def __init__(self, tenants: Mapping[str, Any], *, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._state = pl.DataFrame(schema={"tenant_id": pl.String, "_tokens": pl.Float64, "_at": pl.Int64})
        self.refresh(tenants)

    def refresh(self, tenants: Mapping[str, Any]) -> None:
        """Reread the quotas of the tenant directory (a plan change or a settings override takes effect)."""
        self.quotas = quota_frame(tenants, self.settings).select("tenant_id", "ingest_rate", "ingest_burst")

    def admit(self, rows: pl.DataFrame) -> pl.Series:
        """Which rows (`tenant_id`, `_ts`, in input order) fit their tenant's bucket; takes their tokens."""
        if rows.is_empty():
            return pl.Series("_admit", [], dtype=pl.Boolean)
        rate, burst = pl.col("ingest_rate"), pl.col("ingest_burst")
        frame = (
            rows.select("tenant_id", pl.col(TIME_COLUMN).cast(pl.Int64))
            .join(self.quotas, on="tenant_id", how="left", maintain_order="left")
            .join(self._state, on="tenant_id", how="left", maintain_order="left")
            .with_columns(rate.fill_null(_UNLIMITED), burst.fill_null(_UNLIMITED),
                          pl.col(TIME_COLUMN).cum_max().over("tenant_id").alias("_t"))
        )
        first = pl.col("_t").first().over("tenant_id")
        refilled = pl.col("_tokens") + rate * (first - pl.col("_at")).clip(lower_bound=0) / 1000
        start = pl.when(pl.col("_tokens").is_null()).then(burst).otherwise(pl.min_horizontal(burst, refilled))
        frame = frame.with_columns(
            (start + rate * (pl.col("_t") - first) / 1000).alias("_level"),
            pl.int_range(pl.len()).over("tenant_id").cast(pl.Float64).alias("_k"),
        )
        frame = frame.with_columns(
            (pl.col("_k") + pl.min_horizontal(pl.lit(1.0), (pl.col("_level").floor() - pl.col("_k"))
                                              .cum_min().over("tenant_id"))).alias("_admitted")
        )
        frame = frame.with_columns(
            (pl.col("_admitted") - pl.col("_admitted").shift(1, fill_value=0.0).over("tenant_id") > 0.5)
            .alias("_admit")
        )
        ends = frame.group_by("tenant_id").agg(
            pl.min_horizontal(burst.last(), pl.col("_level").last() - pl.col("_admitted").last()).alias("_tokens"),
            pl.col("_t").last().alias("_at"),
        )
        self._state = pl.concat([self._state.join(ends.select("tenant_id"), on="tenant_id", how="anti"), ends],
                                how="vertical_relaxed")
        return frame.get_column("_admit")

    def limit(self, lander: BronzeLander, records: pl.DataFrame, origins: pl.DataFrame) -> Callable[
            [ValidationResult], ValidationResult]:
        """A `BronzeLander.validate(limit=...)` step for one batch: valid rows above their tenant's quota move to
        quarantine (`quota_exceeded`). `records`: the decoded records (`position`, `raw_payload`);
        `origins`: `position, _unit, _seq, _ts` of every input row."""

        def apply(result: ValidationResult) -> ValidationResult:
            if result.valid.num_rows == 0 or result.valid_input_rows is None:
                return result
            index = pl.Series("_i", result.valid_input_rows).cast(pl.UInt32)
            valid = pl.from_arrow(result.valid.select(["tenant_id", "event_id", "event_date", "source",
                                                       "ingested_at"]))
            assert isinstance(valid, pl.DataFrame)
            rows = valid.with_columns(records.get_column("position").gather(index).alias("position"))
            rows = rows.with_row_index("_row").join(origins, on="position", how="left", maintain_order="left")
            settled = lander.landed_in_bronze(rows.select("_row", "tenant_id", "event_id", "event_date",
                                                          UNIT_COLUMN, SEQ_COLUMN))
            fresh = rows.join(settled, on="_row", how="anti", maintain_order="left")
            decided = pl.concat([
                fresh.select("_row", self.admit(fresh).alias("_admit")),
                settled.select("_row", pl.col("_in_bronze").alias("_admit")),
            ]).sort("_row")
            keep = decided.get_column("_admit")
            if keep.all():
                return result
            excess = rows.filter(~keep).join(self.quotas, on="tenant_id", how="left", maintain_order="left")
            payloads = records.get_column("raw_payload").gather(index.filter(~keep))
            moved = excess.select(
                pl.col("ingested_at").alias("quarantined_at"),
                "tenant_id",
                pl.lit(QUOTA_EXCEEDED).alias("reason_code"),
                pl.format(_REASON, "tenant_id", "ingest_rate", "ingest_burst")
                .alias("reason"),
                payloads.alias("raw_payload"),
                "source",
                "position",
                pl.col("ingested_at").dt.date().alias("event_date"),
            ).to_arrow().cast(QUARANTINE_SCHEMA)
            mask = keep.to_arrow()
            by_reason = dict(result.counts_by_reason)
            by_reason[QUOTA_EXCEEDED] = by_reason.get(QUOTA_EXCEEDED, 0) + excess.height
            return ValidationResult(
                valid=result.valid.filter(mask),
                quarantined=pa.concat_tables([result.quarantined, moved]),
                duplicates_in_batch=result.duplicates_in_batch,
                counts_by_reason=by_reason,
                input_rows=result.input_rows,
                valid_input_rows=index.filter(keep).to_arrow(),
            )

        return apply


def still_over_quota(rows: pl.DataFrame, tenants: Mapping[str, Any], *, settings: Settings | None = None) -> pl.Series:
    """For quarantined `quota_exceeded` rows (`tenant_id`, `reason`): True while the tenant's ingest quota is not
    above the one each row exceeded (stated in its reason), so a replay leaves it in quarantine."""
    quotas = quota_frame(tenants, settings).select("tenant_id", "ingest_rate")
    exceeded = pl.col("reason").str.extract(QUOTA_IN_REASON.pattern, 1).cast(pl.Float64, strict=False)
    judged = rows.select("tenant_id", exceeded.alias("_was")).join(quotas, on="tenant_id", how="left",
                                                                   maintain_order="left")
    return judged.select(
        (pl.col("ingest_rate").is_not_null() & pl.col("_was").is_not_null()
         & (pl.col("ingest_rate") <= pl.col("_was"))).alias("_held")
    ).to_series()
