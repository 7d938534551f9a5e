"""Landing validated batches in bronze: route rows to their tables, dedupe, commit exactly once,
quarantine the rest, and keep an exactly reconciled run log.

Every input row comes from a replayable *unit* (a Kafka partition, a landing file, a SQL load) and has a
sequence number inside it (the offset; 1 for a file; the load number for SQL). A flush lands in this order:

1. valid rows are routed: pooled tenants -> `{lake}/{region}/bronze/events`, dedicated tenants ->
   `{lake}/{region}/tenants/{id}/bronze/events`; quarantined rows -> `{lake}/{region}/quarantine/events`
   (the tenant's region when it is known, else `settings.default_region`);
2. per data table, rows whose seq <= that table's txn version for their unit are dropped (an earlier,
   interrupted attempt already committed them: "recovered"), then bronze rows whose (tenant_id, event_id)
   is already in the table are dropped ("duplicates_existing"; the key sets of recently touched
   `event_date` partitions are cached in memory and rebuilt from Delta on start);
3. each data table gets ONE commit (all tenants of the batch) carrying a Delta txn per unit at the batch's
   highest seq for it: parquet files are staged first, then committed in one transaction through the
   kernel's staged-write API (`shironzi.lake.stage_files` / `commit_staged`), on local and object-store
   lakes alike, so "files written, not committed" is a real, testable state (orphans are invisible and
   vacuumed);
4. last, the *ledger* row (stream: the run-log row of the flush; batch: the processed-file manifest; SQL:
   the watermark) is committed with the same txns, through the same staged-write API. Readers resume from
   the ledger's txns.

Reconciliation is exact per flush: received = landed + quarantined + duplicates_in_batch +
duplicates_existing (recovered rows count as landed/quarantined: they are, by the earlier attempt).

Crash tests stop a landing at each of `LANDING_POINTS` by setting the module-level `landing_hook` in the
process under test (tests/ingestion/_fixtures.py starts the CLI in a child process with a hook that SIGKILLs
it); nothing in the CLI or the settings can trigger it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, get_args

import numpy as np
import polars as pl
import pyarrow as pa

from ingestion.bronze_tables import (
    DEFAULT_CACHED_PARTITIONS,
    KEY_COLUMNS,
    PARTITION_COLUMN,
    SEQ_COLUMN,
    UNIT_COLUMN,
    DataTable,
)
from ingestion.contracts import (
    CANONICAL_SCHEMA,
    QUARANTINE_SCHEMA,
    ValidationResult,
    phi_columns,
    phi_fields,
    pii_fields,
    recoverable_pii_fields,
    tenants_frame,
    validate_batch,
)
from ingestion.run_log import (
    RUN_LOG_SCHEMA,
    Reconciliation,
    read_run_log,
    reconcile_run_log,
    run_log_row,
    run_log_uri,
)
from shironzi.errors import InvalidStateError
from shironzi.lake.delta import Txn, commit_staged, stage_files
from shironzi.lake.groups import LakeGroup
from shironzi.lake.leases import table_lease
from shironzi.lake.paths import table_uri
from shironzi.privacy.phi import PhiCipher, protect_document
from shironzi.privacy.pii_table import PendingPiiRows
from shironzi.privacy.pseudonymise import pseudonymise_batch
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.placement import PlacementState
from shironzi.tenancy.records import TenantInfo
from shironzi.tenancy.registry import get_registry

LandingPoint = Literal["before_write", "after_write", "between_commits", "after_commit"]
LANDING_POINTS: tuple[str, ...] = get_args(LandingPoint)

__all__ = [  # the run log and the table columns live in their own modules; callers import them from here
    "LANDING_POINTS", "RUN_LOG_SCHEMA", "SEQ_COLUMN", "UNIT_COLUMN", "BronzeLander", "DataTable", "LandingBatch",
    "LandingPoint", "Ledger", "Reconciliation", "landing_hook", "read_run_log", "reconcile_run_log",
    "records_keys", "run_log_row", "run_log_uri",
]  # fmt: skip

landing_hook: Callable[[LandingPoint, int], None] | None = None
"""Test-only: called with (point, flush number) at each point of a landing. A crash test sets it in the
process under test (e.g. to SIGKILL itself at `after_write` of flush 2); production code never sets it."""


# ------------------------------------------------------------------------------------ batches


@dataclass(frozen=True)
class LandingBatch:
    """A validated batch and where each of its rows came from.

    `origins`: `position -> _unit, _seq` for every input row (malformed ones included); `valid_origins`:
    `_unit, _seq` of each row of `result.valid`, in order. Build it with `LandingBatch.build`; several
    files' batches combine with `LandingBatch.merge`.
    """

    result: ValidationResult
    origins: pl.DataFrame
    valid_origins: pl.DataFrame
    keys_unique: bool = False  # True when no two valid rows share (tenant_id, event_id)

    @classmethod
    def build(cls, result: ValidationResult, *, records: pl.DataFrame, origins: pl.DataFrame) -> LandingBatch:
        """`records`: every decoded input row (malformed payloads excluded) in input order, with the text of
        `tenant_id`, `event_id` and its unique `position` (see `records_keys`)."""
        return cls(result=result, origins=origins, valid_origins=_valid_origins(result, records, origins),
                   keys_unique=True)  # validate_batch keeps the first row of each key

    @classmethod
    def merge(cls, batches: list[LandingBatch]) -> LandingBatch:
        """One batch out of several (e.g. several small files landed in one commit)."""
        if len(batches) == 1:
            return batches[0]
        by_reason: dict[str, int] = {}
        for batch in batches:
            for code, rows in batch.result.counts_by_reason.items():
                by_reason[code] = by_reason.get(code, 0) + rows
        result = ValidationResult(
            valid=pa.concat_tables([b.result.valid for b in batches]),
            quarantined=pa.concat_tables([b.result.quarantined for b in batches]),
            duplicates_in_batch=sum(b.result.duplicates_in_batch for b in batches),
            counts_by_reason=by_reason,
            input_rows=sum(b.result.input_rows for b in batches),
        )
        return cls(
            result=result,
            origins=pl.concat([b.origins for b in batches]),
            valid_origins=pl.concat([b.valid_origins for b in batches]),
        )

    def unit_versions(self) -> dict[str, int]:
        """Per unit, the highest seq in the batch: the txn version a commit of this batch records."""
        top = self.origins.group_by(UNIT_COLUMN).agg(pl.col(SEQ_COLUMN).max())
        return dict(
            zip(top.get_column(UNIT_COLUMN).to_list(), top.get_column(SEQ_COLUMN).to_list(), strict=True)
        )


def records_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """`tenant_id, event_id` as text (null where not castable) plus `position`, for `LandingBatch.records`."""
    columns = []
    for name in KEY_COLUMNS:
        if name not in frame.columns or frame.schema[name].is_nested():
            columns.append(pl.lit(None, pl.String).alias(name))
        else:
            columns.append(pl.col(name).cast(pl.String, strict=False))
    return frame.select(*columns, pl.col("position").cast(pl.String))


def _valid_origins(result: ValidationResult, records: pl.DataFrame, origins: pl.DataFrame) -> pl.DataFrame:
    """`_unit, _seq` for each valid row, in the valid table's order.

    validate_batch keeps, among the accepted rows (not quarantined) in input order, the first row of each
    key; we rebuild that selection from the positions and check it matches the valid rows key by key."""
    valid_keys = pl.from_arrow(result.valid.select(list(KEY_COLUMNS)))
    assert isinstance(valid_keys, pl.DataFrame)
    rows = result.valid_input_rows
    if rows is not None and len(rows) == valid_keys.height and records.height:
        # The validator says which input row each valid row is: check the keys agree, then look it up.
        picked = records.select(pl.all().gather(pl.Series(rows).cast(pl.UInt32)))
        if picked.select(KEY_COLUMNS).equals(valid_keys):
            located = picked.select("position").join(origins, on="position", how="left", maintain_order="left")
            if located.get_column(UNIT_COLUMN).null_count():
                raise InvalidStateError("some valid rows have no origin (position missing from origins)")
            return located.select(UNIT_COLUMN, SEQ_COLUMN)
    quarantined_positions = pl.from_arrow(result.quarantined.select(["position"]))
    assert isinstance(quarantined_positions, pl.DataFrame)
    accepted = records.join(quarantined_positions, on="position", how="anti", maintain_order="left")
    picked = accepted.filter(pl.struct(*KEY_COLUMNS).is_first_distinct())
    if picked.height != valid_keys.height or not picked.select(KEY_COLUMNS).equals(valid_keys):
        raise InvalidStateError(
            f"cannot trace {valid_keys.height} valid rows back to their input positions ({picked.height} "
            "candidates): the validator's row selection changed"
        )
    located = picked.select("position").join(origins, on="position", how="left", maintain_order="left")
    if located.get_column(UNIT_COLUMN).null_count():
        raise InvalidStateError("some valid rows have no origin (position missing from origins)")
    return located.select(UNIT_COLUMN, SEQ_COLUMN)


def _protect_payload(payload: str, columns: list[str], fields: list[str], cipher: PhiCipher) -> str:
    """A quarantined raw payload with its PHI protected (see `BronzeLander.protect_quarantined_phi`)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return cipher.protect(payload)
    for name in columns:
        if doc.get(name) is not None:
            doc[name] = cipher.protect(str(doc[name]))
    props = doc.get("properties")
    if isinstance(props, str):  # properties sent as JSON text
        try:
            inner = json.loads(props)
        except ValueError:
            return cipher.protect(payload)
        if isinstance(inner, dict) and protect_document(inner, fields, cipher):
            doc["properties"] = json.dumps(inner, separators=(",", ":"))
    elif isinstance(props, dict):
        protect_document(props, fields, cipher)
    return json.dumps(doc, separators=(",", ":"))


# ------------------------------------------------------------------------------------ the lander


@dataclass(frozen=True)
class Ledger:
    """The last commit of a flush: `rows(counts)` builds its rows once the counts are known."""

    uri: str
    rows: Callable[[Reconciliation], pa.Table]
    partition_by: str | None = None


class BronzeLander:
    """Lands validated batches in bronze and quarantine; keeps txn versions and key caches across flushes."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        tenants: Mapping[str, TenantInfo] | None = None,
        cached_partitions: int = DEFAULT_CACHED_PARTITIONS,
        precommit: Callable[[dict[str, pl.DataFrame]], None] | None = None,
    ) -> None:
        """`precommit({bronze uri: new rows})` runs after validation and before the first commit of every
        flush; when it raises, the flush commits nothing (e.g. `ingestion.quality.PrecommitCheck`)."""
        self.settings = settings or get_settings()
        self.precommit = precommit
        self.lake = self.settings.resolved_lake_uri
        self.storage_options = self.settings.storage_options
        self.flushes = 0
        self._cached_partitions = cached_partitions
        self._tables: dict[str, DataTable] = {}
        self.touched: dict[str, set[date]] = {}  # bronze table -> event_date partitions this lander wrote
        self._overlay: dict[str, PlacementState] | None = None  # moved tenants as last fenced
        self.refresh_tenants(tenants)

    # tenants -------------------------------------------------------------------------------------

    def refresh_tenants(self, tenants: Mapping[str, TenantInfo] | None = None) -> None:
        """Reload the tenant directory (the registry's, unless given) used for validation and routing."""
        if tenants is None:
            tenants = get_registry(self.settings).tenant_directory(fresh=True)
        self.tenants = dict(tenants)
        self.tenants_frame = tenants_frame(self.tenants)
        self._set_routes()

    def _set_routes(self) -> None:
        self._routes = pl.DataFrame(
            {
                "tenant_id": [t.tenant_id for t in self.tenants.values()],
                "_region": [t.region for t in self.tenants.values()],
                "_placement": [t.placement for t in self.tenants.values()],
            },
            schema={"tenant_id": pl.String, "_region": pl.String, "_placement": pl.String},
        )

    def fence_moved_tenants(self) -> bool:
        """The placement fence of an online tenant move (`shironzi.tenancy.moves`): read the placement and
        epoch of every moved tenant and re-route those whose placement changed; True when one did. Called while
        holding the shared leases of the bronze tables about to be committed: a mover flips a tenant under its
        source table's exclusive lease, so no flush commits a tenant's rows to its old table after the flip."""
        overlay = get_registry(self.settings).placement_overlay()
        if overlay == self._overlay:
            return False
        self._overlay = overlay
        changed = False
        for tenant_id, now in overlay.items():
            info = self.tenants.get(tenant_id)
            if info is not None and (info.region, info.placement) != (now.region, now.placement):
                self.tenants[tenant_id] = info._replace(region=now.region, placement=now.placement)
                changed = True
        if changed:
            self._set_routes()
        return changed

    def validate(
        self, records: Any, *, source: str, now: datetime | None = None,
        limit: Callable[[ValidationResult], ValidationResult] | None = None,
    ) -> ValidationResult:
        """Contract-validate a decoded batch or a records frame against the current tenant directory.
        `limit` may move valid rows to quarantine (the stream's ingest quota) before PHI and PII are handled."""
        result = validate_batch(
            records, tenants=self.tenants_frame, now=now or datetime.now(UTC), source=source
        )
        if limit is not None:
            result = limit(result)
        # PHI first: the PII table then records the protected customer id of each row, never the clear one.
        return dataclasses.replace(result, valid=self.pseudonymise(self.protect_phi(result.valid)),
                                   quarantined=self.protect_quarantined_phi(result.quarantined))

    def _row_industries(self, valid: pa.Table) -> Any:
        """The industry of each row's tenant (an Arrow array; null for a tenant missing from the directory)."""
        import pyarrow.compute as pc

        tenant_ids = pa.array(list(self.tenants), pa.string())
        industry_by_tenant = pa.array([info.industry for info in self.tenants.values()], pa.string())
        return pc.take(industry_by_tenant, pc.index_in(valid.column("tenant_id"), value_set=tenant_ids))

    def _phi_rules(self, tenant_ids: Any) -> dict[str, tuple[list[str], list[str], PhiCipher]]:
        """tenant -> (PHI columns, PHI properties, its cipher) for the tenants among `tenant_ids` whose
        contract declares PHI (an unknown tenant's rows have no key to protect them with)."""
        declared = {}
        for tenant_id in sorted({t for t in tenant_ids if t is not None and t in self.tenants}):
            industry = self.tenants[tenant_id].industry
            columns, fields = phi_columns(industry), phi_fields(industry)
            if columns or fields:
                declared[tenant_id] = (columns, fields)
        ciphers = PhiCipher.of_many(declared)  # new tenants' keys in one keystore commit, not one each
        return {t: (columns, fields, ciphers[t]) for t, (columns, fields) in declared.items()}

    def protect_phi(self, valid: pa.Table) -> pa.Table:
        """Encrypt the contract's PHI deterministically under each tenant's PHI key (`shironzi.privacy.phi`):
        the PHI columns (a patient's `customer_id`) and PHI properties. PHI that is also PII is left to the
        PII pass (it is hashed). Each distinct (tenant, value) is encrypted once."""
        if valid.num_rows == 0:
            return valid
        frame = pl.from_arrow(valid.select(["tenant_id", "customer_id", "properties"]))
        assert isinstance(frame, pl.DataFrame)
        rules = self._phi_rules(frame.get_column("tenant_id").unique().to_list())
        if not rules:
            return valid
        out = valid
        by_column = [t for t, (columns, _, _) in rules.items() if "customer_id" in columns]
        if by_column:
            pairs = frame.filter(pl.col("tenant_id").is_in(by_column) & pl.col("customer_id").is_not_null())
            pairs = pairs.select("tenant_id", "customer_id").unique()
            protected = [rules[t][2].protect(c) for t, c in pairs.iter_rows()]
            mapping = pairs.with_columns(pl.Series("_phi", protected, dtype=pl.String))
            column = frame.join(mapping, on=["tenant_id", "customer_id"], how="left", maintain_order="left")
            out = self._replace_column(out, "customer_id", column.select(pl.coalesce("_phi", "customer_id")))
        by_field = [t for t, (_, fields, _) in rules.items() if fields]
        if by_field:
            texts = frame.get_column("properties").to_list()
            # Only rows of those tenants whose text mentions a PHI key are parsed (a vectorised pre-filter).
            keys = sorted({json.dumps(f) for t in by_field for f in rules[t][1]})
            mentions = pl.any_horizontal([pl.col("properties").str.contains(k, literal=True) for k in keys])
            candidates = frame.with_row_index("_row").filter(pl.col("tenant_id").is_in(by_field) & mentions)
            for row, tenant_id, text in candidates.select("_row", "tenant_id", "properties").iter_rows():
                _, fields, cipher = rules[tenant_id]
                doc = json.loads(text)
                if isinstance(doc, dict) and protect_document(doc, fields, cipher):
                    texts[row] = json.dumps(doc, separators=(",", ":"))
            out = self._replace_column(out, "properties", pl.DataFrame({"properties": texts}, schema={
                "properties": pl.String}))
        return out

    def protect_quarantined_phi(self, quarantined: pa.Table) -> pa.Table:
        """Protect PHI in quarantined rows of tenants whose contract declares PHI: a raw payload that is a
        JSON object keeps its shape with its PHI encrypted as landing would; any other payload (malformed
        text) is sealed whole (`phi_...`, readable with the tenant key). Unknown tenants have no key."""
        if quarantined.num_rows == 0:
            return quarantined
        tenants = quarantined.column("tenant_id").to_pylist()
        rules = self._phi_rules(tenants)
        if not rules:
            return quarantined
        payloads = quarantined.column("raw_payload").to_pylist()
        for row, tenant_id in enumerate(tenants):
            if tenant_id in rules:
                payloads[row] = _protect_payload(payloads[row], *rules[tenant_id])
        return self._replace_column(quarantined, "raw_payload", pl.DataFrame({"raw_payload": payloads},
                                                                             schema={"raw_payload": pl.String}))

    @staticmethod
    def _replace_column(table: pa.Table, name: str, values: pl.DataFrame) -> pa.Table:
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        return table.set_column(index, field, values.to_series().to_arrow().cast(field.type))

    def pseudonymise(self, valid: pa.Table) -> pa.Table:
        """Replace the contract's PII fields by per-tenant keyed hashes before bronze (raw values of
        recoverable fields go encrypted to the PII table): one scan for PII keys, then one vectorised pass per
        industry over its candidate rows, written back in place."""
        import pyarrow.compute as pc


        if valid.num_rows == 0:
            return valid
        industries = self._row_industries(valid)
        fields_of = {i: pii_fields(i) for i in pc.unique(industries).to_pylist() if i is not None}
        every_field = sorted({name for fields in fields_of.values() for name in fields})
        if not every_field:
            return valid
        # One scan of every row for any PII key; each candidate is then handled with its own industry's keys.
        pattern = "|".join(re.escape(json.dumps(name)) for name in every_field)
        candidates = pc.indices_nonzero(pc.fill_null(pc.match_substring_regex(valid.column("properties"), pattern),
                                                     False))
        if len(candidates) == 0:
            return valid
        candidate_industries = pc.take(industries, candidates)
        positions, parts = [], []
        touched = {"properties"}
        pii_rows = PendingPiiRows()
        for industry, fields in sorted(fields_of.items()):
            if not fields:
                continue
            hits = pc.filter(candidates, pc.fill_null(pc.equal(candidate_industries, industry), False))
            if len(hits) == 0:
                continue
            positions.append(hits.combine_chunks() if isinstance(hits, pa.ChunkedArray) else hits)
            touched.update(fields)
            parts.append(pseudonymise_batch(valid.take(hits), pii_fields=fields, pending=pii_rows,
                                            recoverable_fields=recoverable_pii_fields(industry)))
        if not parts:
            return valid
        pii_rows.store()  # one PII table commit for the whole batch, before the batch's bronze commit
        # Write the changed rows back in place (rows keep their input order: landing traces valid rows to
        # their input positions by order). Only PII columns and `properties` can have changed.
        hit_rows = pa.concat_arrays(positions)
        order = pc.sort_indices(hit_rows)
        chosen = np.zeros(valid.num_rows, dtype=bool)
        chosen[hit_rows.to_numpy()] = True
        mask = pa.array(chosen)
        changed = pa.concat_tables([part.cast(valid.schema) for part in parts])
        out = valid
        for index, column in enumerate(valid.schema):
            if column.name in touched:
                replaced = pc.replace_with_mask(valid.column(column.name).combine_chunks(), mask,
                                                changed.column(column.name).take(order).combine_chunks())
                out = out.set_column(index, column, replaced)
        return out

    # tables ----------------------------------------------------------------------------------------

    def table(self, uri: str, *, quarantine: bool) -> DataTable:
        if uri not in self._tables:
            self._tables[uri] = DataTable(
                uri,
                QUARANTINE_SCHEMA if quarantine else CANONICAL_SCHEMA,
                dedupe=not quarantine,
                storage_options=self.storage_options,
                cached_partitions=self._cached_partitions,
            )
        return self._tables[uri]

    def bronze_uri(self, tenant: TenantInfo) -> str:
        group = LakeGroup.of_tenant(tenant.tenant_id, region=tenant.region, placement=tenant.placement)
        return group.table_uri(self.lake, layer="bronze", table="events")

    def quarantine_uri(self, region: str) -> str:
        return table_uri(self.lake, layer="quarantine", table="events", region=region)

    def _route(self, valid: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Valid rows per bronze table (the tenant's region; its own root when dedicated)."""
        routed = valid.join(self._routes, on="tenant_id", how="left", maintain_order="left")
        if routed.get_column("_region").null_count():
            raise InvalidStateError(
                "valid rows for a tenant missing from the directory: refusing to land them"
            )
        targets: dict[str, pl.DataFrame] = {}
        for (region, placement), part in routed.partition_by(["_region", "_placement"], as_dict=True).items():
            if placement == "dedicated":
                for (tenant_id,), rows in part.partition_by("tenant_id", as_dict=True).items():
                    uri = self.bronze_uri(self.tenants[tenant_id])
                    targets[uri] = rows.drop("_region", "_placement")
            else:
                uri = LakeGroup.pooled(str(region)).table_uri(self.lake, layer="bronze", table="events")
                targets[uri] = part.drop("_region", "_placement")
        return targets

    def _route_quarantine(self, rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
        regions = rows.join(
            self._routes.select("tenant_id", "_region"), on="tenant_id", how="left", maintain_order="left"
        )
        regions = regions.with_columns(pl.col("_region").fill_null(self.settings.default_region))
        return {
            self.quarantine_uri(str(region)): part.drop("_region")
            for (region,), part in regions.partition_by("_region", as_dict=True).items()
        }

    def landed_in_bronze(self, rows: pl.DataFrame) -> pl.DataFrame:
        """For rows (`_row, tenant_id, event_id, event_date, _unit, _seq`) that an earlier, interrupted landing
        already decided (seq <= the txn of their bronze or their region's quarantine table): `_row, _in_bronze`,
        whether that landing put them in bronze. A decision that can change between attempts (the ingest quota)
        must follow it, or a retry would land a row twice or drop it. Empty in the usual case (nothing to repair)."""
        found = []
        for uri, part in self._route(rows).items():
            region = self.tenants[part.get_column("tenant_id")[0]].region
            bronze, quarantine = self.table(uri, quarantine=False), self.table(self.quarantine_uri(region),
                                                                                quarantine=True)
            units = part.get_column(UNIT_COLUMN).unique().to_list()
            done = {}
            for unit, versions in zip(units, zip(bronze.txn_versions(units).values(),
                                                 quarantine.txn_versions(units).values(), strict=True),
                                      strict=True):
                known = [v for v in versions if v is not None]
                if known:
                    done[unit] = max(known)
            if not done:
                continue
            limit = pl.col(UNIT_COLUMN).replace_strict(done, default=-1, return_dtype=pl.Int64)
            settled = part.filter(pl.col(SEQ_COLUMN) <= limit)
            if settled.is_empty():
                continue
            fresh, _ = bronze.drop_existing(settled)
            found.append(settled.select("_row", ~pl.col("_row").is_in(fresh.get_column("_row").implode())
                                        .alias("_in_bronze")))
        if not found:
            return pl.DataFrame(schema={"_row": pl.UInt32, "_in_bronze": pl.Boolean})
        return pl.concat(found)

    # landing ---------------------------------------------------------------------------------------

    def _reached(self, point: LandingPoint) -> None:
        if landing_hook is not None:
            landing_hook(point, self.flushes)

    def land(
        self, batch: LandingBatch, *, ledger: Ledger, metadata: Mapping[str, str] | None = None
    ) -> Reconciliation:
        """Land one validated batch: data tables first (one commit each), then the ledger row(s)."""
        self.flushes += 1
        result = batch.result
        unit_versions = batch.unit_versions()

        valid = pl.from_arrow(result.valid)
        assert isinstance(valid, pl.DataFrame)
        valid = pl.concat([valid, batch.valid_origins], how="horizontal")
        quarantined = pl.from_arrow(result.quarantined)
        assert isinstance(quarantined, pl.DataFrame)
        quarantined = quarantined.join(batch.origins, on="position", how="left", maintain_order="left")
        if quarantined.get_column(UNIT_COLUMN).null_count():
            raise InvalidStateError("some quarantined rows have no origin (position missing from origins)")

        while True:  # routed, then fenced under the bronze tables' shared leases (re-routed after a move)
            counts, plans = self._plan(batch, valid, quarantined, unit_versions)
            with ExitStack() as leases:
                for uri in sorted(t.uri for t, _, _ in plans if t.dedupe):
                    leases.enter_context(table_lease(uri))
                if self.fence_moved_tenants():
                    continue
                self._commit_plans(counts, plans, metadata)
            break
        self._reached("after_commit")
        ledger_rows = ledger.rows(counts)
        staged = stage_files(
            ledger.uri, ledger_rows, partition_by=ledger.partition_by, storage_options=self.storage_options
        )
        committed = commit_staged(
            staged,
            txns=[Txn(app, int(v)) for app, v in unit_versions.items()],
            metadata={"shironzi.stage": "ingest", **dict(metadata or {})},
            storage_options=self.storage_options,
        )
        counts.table_versions[ledger.uri] = committed.version
        return counts

    def _plan(
        self, batch: LandingBatch, valid: pl.DataFrame, quarantined: pl.DataFrame, unit_versions: dict[str, int]
    ) -> tuple[Reconciliation, list[tuple[DataTable, pl.DataFrame, dict[str, int]]]]:
        """Route, drop recovered and existing rows: the commits of one flush and its counts."""
        result = batch.result
        counts = Reconciliation(received=result.input_rows, duplicates_in_batch=result.duplicates_in_batch)
        plans: list[tuple[DataTable, pl.DataFrame, dict[str, int]]] = []
        for uri, rows in self._route(valid).items():
            target = self.table(uri, quarantine=False)
            rows, recovered = target.drop_recovered(rows)
            unique = rows if batch.keys_unique else rows.unique(
                subset=list(KEY_COLUMNS), keep="first", maintain_order=True)
            counts.duplicates_in_batch += rows.height - unique.height  # across merged files
            rows, existing = target.drop_existing(unique)
            counts.landed += rows.height + recovered
            counts.recovered += recovered
            counts.duplicates_existing += existing
            plans.append((target, rows, self._txns_for(target, rows, unit_versions)))
        for uri, rows in self._route_quarantine(quarantined).items():
            target = self.table(uri, quarantine=True)
            kept, recovered = target.drop_recovered(rows)
            counts.quarantined += rows.height
            counts.recovered += recovered
            for code, n in rows.get_column("reason_code").value_counts().iter_rows():
                counts.quarantined_by_reason[code] = counts.quarantined_by_reason.get(code, 0) + n
            plans.append((target, kept, self._txns_for(target, kept, unit_versions)))

        if not counts.balanced():
            raise InvalidStateError(f"reconciliation does not balance: {counts.as_dict()}")
        return counts, plans

    def _commit_plans(
        self,
        counts: Reconciliation,
        plans: list[tuple[DataTable, pl.DataFrame, dict[str, int]]],
        metadata: Mapping[str, str] | None,
    ) -> None:
        if self.precommit is not None:
            self.precommit({t.uri: rows.drop(UNIT_COLUMN, SEQ_COLUMN) for t, rows, _ in plans if t.dedupe})
        commit_metadata = {"shironzi.stage": "ingest", **dict(metadata or {})}
        self._reached("before_write")
        first_commit = True
        for target, rows, versions in plans:
            if rows.is_empty():
                continue
            data = rows.drop(UNIT_COLUMN, SEQ_COLUMN).to_arrow().cast(target.schema)
            # The shared table lease keeps an erasure's zero-retention vacuum from deleting files that
            # are written but not yet committed (shironzi.lake.leases explains the protocol).
            with table_lease(target.uri):
                staged = target.stage(data)
                self._reached("after_write")
                version = target.commit(staged, versions, commit_metadata)
            target.remember(rows, versions)
            counts.table_versions[target.uri] = version
            if target.dedupe:
                self.touched.setdefault(target.uri, set()).update(
                    rows.get_column(PARTITION_COLUMN).unique().to_list()
                )
            if first_commit:
                self._reached("between_commits")
                first_commit = False

    @staticmethod
    def _txns_for(target: DataTable, rows: pl.DataFrame, unit_versions: Mapping[str, int]) -> dict[str, int]:
        """Txn versions for a table's commit: every unit of the batch this table has not yet recorded."""
        out = {}
        recorded = target.txn_versions(unit_versions)
        for unit, version in unit_versions.items():
            known = recorded[unit]
            if known is None or version > known:
                out[unit] = version
        return out

    def tables(self) -> dict[str, DataTable]:
        return dict(self._tables)

    def forget_tables(self) -> None:
        """Drop every table's cached txn versions and keys: after a failed commit (did it land or not?) they
        are re-read from the Delta log, so a retry neither repeats nor loses a row."""
        self._tables.clear()
