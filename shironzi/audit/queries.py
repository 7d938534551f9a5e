"""Lake audit queries for the CLI, the API and dashboards: access, changes, lineage and inventory."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from shironzi.audit.log import read_audit_events
from shironzi.audit.table_identity import identity_matches
from shironzi.errors import InvalidInputError, TableNotFoundError
from shironzi.lake.delta import add_actions, files_touched, history, open_table, scan_polars, table_exists
from shironzi.lake.discovery import LakeTable, discover_tables
from shironzi.lake.leases import normalise_uri
from shironzi.settings import get_settings

READ_ACTIONS_EXCLUDED = frozenset({"table_write", "training_run"})


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def window_filters(
    tenant_id: str, start: dt.datetime | None, end: dt.datetime | None
) -> list[tuple[str, str, Any]]:
    """Audit filters for one tenant's events in [start, end): the day bounds prune partitions."""
    if start and end and end <= start:
        raise InvalidInputError("the end of the window must be after its start")
    filters: list[tuple[str, str, Any]] = [("tenant_id", "=", tenant_id)]
    if start:
        filters += [("event_date", ">=", start.date()), ("event_time", ">=", start)]
    if end:
        filters += [("event_date", "<=", end.date()), ("event_time", "<", end)]
    return filters


def access(
    tenant_id: str, *, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, Any]:
    """Who accessed tenant T's data between two times, and what: every event for T (reads, denials,
    admin actions), plus a per-actor summary of resources touched."""
    start, end = _utc(start), _utc(end)
    rows = read_audit_events(filters=window_filters(tenant_id, start, end)).to_pylist()
    events = [
        {
            k: r[k]
            for k in (
                "event_time",
                "actor",
                "actor_kind",
                "is_admin",
                "action",
                "resource",
                "purpose",
                "outcome",
                "request_id",
            )
        }
        for r in rows
    ]
    actors: dict[str, dict[str, Any]] = {}
    for event in events:
        slot = actors.setdefault(
            event["actor"], {"events": 0, "denied": 0, "resources": set(), "actions": set()}
        )
        slot["events"] += 1
        slot["denied"] += event["outcome"] == "denied"
        slot["resources"].add(event["resource"])
        slot["actions"].add(event["action"])
    summary = {
        a: {**s, "resources": sorted(s["resources"]), "actions": sorted(s["actions"])}
        for a, s in actors.items()
    }
    return {"tenant_id": tenant_id, "start": start, "end": end, "events": events, "actors": summary}


def changes(table: str) -> list[dict[str, Any]]:
    """Every commit of a table (version, operation, metrics, engine) joined to the audit events that
    caused it (by table URI + version from `record_table_write`, or the commit's `run_id` metadata)."""
    uri = _resolve_table(table)
    commits = history(uri)
    writes = read_audit_events(
        filters=[("action", "=", "table_write"), ("resource", "=", normalise_uri(uri))]
    )
    by_version: dict[int, list[dict[str, Any]]] = {}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in writes.to_pylist():
        details = json.loads(row["details"])
        event = {
            "event_id": row["event_id"],
            "actor": row["actor"],
            "event_time": row["event_time"],
            "run_id": details.get("run_id"),
            "rows": details.get("rows"),
            "inputs": details.get("inputs", []),
        }
        if details.get("version") is not None:
            by_version.setdefault(int(details["version"]), []).append(event)
        if details.get("run_id"):
            by_run.setdefault(str(details["run_id"]), []).append(event)
    out = []
    for commit in commits:
        run_id = commit["userMetadata"].get("run_id")
        caused = {e["event_id"]: e for e in by_version.get(commit["version"], [])}
        if run_id:
            caused.update({e["event_id"]: e for e in by_run.get(str(run_id), [])})
        out.append(
            {
                "version": commit["version"],
                "timestamp": commit["timestamp"],
                "operation": commit.get("operation"),
                "metrics": commit["operationMetrics"],
                "engine": commit.get("engineInfo") or commit.get("clientVersion"),
                "metadata": commit["userMetadata"],
                "audit_events": list(caused.values()),
            }
        )
    return out


def _resolve_table(table: str) -> str:
    """A table URI, or a path relative to the lake root (`eu-west/gold/fct_orders`)."""
    for candidate in (table, f"{get_settings().resolved_lake_uri}/{table.strip('/')}"):
        if table_exists(candidate):
            return candidate
    raise TableNotFoundError(f"no Delta table {table!r} (a URI or a path under the lake)", table=table)


def _tenant_rows(table: LakeTable, tenant_id: str) -> dict[str, Any] | None:
    """T's row count, approximate bytes and oldest/newest rows in one table (None if no tenant_id column)."""
    import polars as pl

    handle = open_table(table.uri)
    names = [f.name for f in handle.schema().fields]
    if "tenant_id" not in names:
        return None
    time_column = next((c for c in ("event_time", "event_date", "created_at") if c in names), None)
    frame = scan_polars(table.uri).filter(pl.col("tenant_id") == tenant_id)
    aggregates = [pl.len().alias("rows")]
    if time_column:
        aggregates += [pl.col(time_column).min().alias("oldest"), pl.col(time_column).max().alias("newest")]
    stats = frame.select(aggregates).collect().row(0, named=True)
    if not stats["rows"]:
        return None
    actions = add_actions(table.uri)
    total_rows = sum(actions.column("num_records").to_pylist()) or 1
    total_bytes = sum(actions.column("size_bytes").to_pylist())
    return {
        "table": table.relative,
        "layer": table.layer,
        "placement": "dedicated" if table.tenant_id else ("platform" if table.platform else "pooled"),
        "rows": int(stats["rows"]),
        "approx_bytes": int(total_bytes * stats["rows"] / total_rows),
        "oldest": stats.get("oldest"),
        "newest": stats.get("newest"),
        "version": handle.version(),
        "phi_columns": _phi_columns(frame),
    }


PHI_SAMPLE_ROWS = 2000
_PHI_VALUE = r'(^|")phi_[A-Za-z0-9_-]{22,}'  # a PHI-protected value, alone or inside a JSON document


def _phi_columns(frame: Any) -> list[str]:
    """The text columns whose values (or JSON values) in a sample of T's rows are PHI-protected: where a
    healthcare tenant's protected health information sits, for the inventory a compliance officer reads."""
    import polars as pl

    texts = [name for name, kind in frame.collect_schema().items() if kind == pl.String and name != "tenant_id"]
    if not texts:
        return []
    found = frame.head(PHI_SAMPLE_ROWS).select(pl.col(texts).str.contains(_PHI_VALUE).any()).collect()
    return [name for name in texts if found[name][0]]


def inventory(tenant_id: str) -> list[dict[str, Any]]:
    """Every Delta table (pooled, the tenant's dedicated root, platform) holding T's rows, with counts,
    approximate bytes (the tenant's share of the table's file bytes), oldest/newest rows and the columns
    that hold PHI-protected values (`phi_columns`, judged on a sample of T's rows)."""
    found = []
    for table in discover_tables():
        if table.tenant_id not in (None, tenant_id):
            continue
        entry = _tenant_rows(table, tenant_id)
        if entry is not None:
            found.append(entry)
    return found


def lineage(tenant_id: str) -> dict[str, Any]:
    """Which tables, training runs and model versions contain or were derived from T's rows: start from
    the tables that hold T's rows, then follow the recorded run inputs (table writes, training runs)."""
    holding = {
        normalise_uri(t.uri): t.relative
        for t in discover_tables()
        if t.tenant_id in (None, tenant_id) and _has_rows(t, tenant_id)
    }
    writes = read_audit_events(filters=[("action", "in", ["table_write", "training_run"])]).to_pylist()
    derived: dict[str, dict[str, Any]] = {}
    frontier = set(holding)
    changed = True
    while changed:
        changed = False
        for row in writes:
            if row["action"] != "table_write":
                continue
            details = json.loads(row["details"])
            inputs = [i for i in details.get("inputs", []) if i["table"] in frontier]
            target = row["resource"]
            if inputs and target not in frontier:
                frontier.add(target)
                derived[target] = {
                    "table": target,
                    "version": details.get("version"),
                    "inputs": inputs,
                    "run_id": details.get("run_id"),
                    **({"models": details["models"]} if details.get("models") else {}),
                }
                changed = True
    runs, models = [], []
    for row in writes:
        if row["action"] != "training_run":
            continue
        details = json.loads(row["details"])
        inputs = [i for i in details.get("inputs", []) if any(identity_matches(i["table"], t) for t in frontier)]
        if inputs:
            runs.append(
                {
                    "run_id": details.get("run_id"),
                    "inputs": inputs,
                    "model": details.get("model"),
                    "model_version": details.get("model_version"),
                }
            )
            if details.get("model"):
                models.append({"model": details["model"], "version": details.get("model_version")})
    return {
        "tenant_id": tenant_id,
        "tables_with_rows": sorted(holding.values()),
        "derived_tables": sorted(derived.values(), key=lambda d: d["table"]),
        "training_runs": runs,
        "models": models,
    }


def _has_rows(table: LakeTable, tenant_id: str) -> bool:
    names = [f.name for f in open_table(table.uri).schema().fields]
    if "tenant_id" not in names:
        return False
    touched, _ = files_touched(table.uri, tenant_id=tenant_id)  # statistics first: cheap
    if not touched:
        return False
    entry = _tenant_rows(table, tenant_id)
    return entry is not None


def as_jsonable(value: Any) -> Any:
    """Datetimes and sets to strings/lists for `--json` output."""
    if isinstance(value, dict):
        return {k: as_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [as_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


__all__: Sequence[str] = ("access", "as_jsonable", "changes", "inventory", "lineage", "window_filters")
