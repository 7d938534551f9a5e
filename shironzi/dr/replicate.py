"""Asynchronous Delta replication by log shipping: each region's lake to its replica in the peer region.

For every table under the source lake, and every commit the replica does not have yet:

1. copy the data files the commit adds (a file already there with the same size is not copied again);
2. write the same commit JSON at the same version in the replica (`_delta_log/<version>.json`, put-if-absent);
3. compare the two snapshots at that version (file set and row count).

The replica's position is its own log, so a crash at any point resumes where it stopped, and a replay writes
nothing twice. The commit is copied verbatim: its `txn` actions (the Kafka positions of the stream ingestor)
come along, so an ingestor promoted in the peer resumes exactly where the replica stops.

Residency: a dedicated table of a residency-restricted tenant whose peer lies outside its jurisdiction is not
replicated at all; any other commit whose files hold such a tenant's rows (a pooled table) is refused
(`ResidencyError`) before anything of it is copied, so restricted tenants belong on dedicated placement unless
their region's peer shares their jurisdiction.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from shironzi.dr.regions import (
    REPLICA_DIR,
    allowed_regions,
    cached_states,
    peer_region,
    region_lake,
    replica_lake,
)
from shironzi.errors import ReplicationDivergedError, ResidencyError
from shironzi.lake.discovery import discover_tables, is_local, lake_filesystem
from shironzi.observability import stage
from shironzi.settings import RegionLake, Settings, get_settings
from shironzi.tenancy import get_registry

logger = logging.getLogger("shironzi.dr")

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.parquet$")
Direction = Literal["forward", "reverse"]
TenantGuard = Callable[[set[str]], None]
Progress = Callable[[str, int, int], None]


@dataclass
class TableLag:
    """How far one replica table is behind its source."""

    relative: str
    source_version: int
    replica_version: int
    lag_seconds: float
    blocked: str | None = None

    @property
    def lag_versions(self) -> int:
        return max(0, self.source_version - self.replica_version)


@dataclass
class ShipResult:
    """What one pass over one table shipped."""

    relative: str
    versions: list[int] = field(default_factory=list)
    files_copied: int = 0
    bytes_copied: int = 0
    diverged_moved: list[int] = field(default_factory=list)
    withheld: bool = False
    blocked: str | None = None


@dataclass
class RegionPass:
    """One replication pass of a region: per table results."""

    region: str
    direction: Direction
    source: str
    target: str
    tables: list[ShipResult] = field(default_factory=list)

    @property
    def versions(self) -> int:
        return sum(len(t.versions) for t in self.tables)

    @property
    def blocked(self) -> list[ShipResult]:
        return [t for t in self.tables if t.blocked]


# --- file helpers (every access through the kernel's lake filesystem, with the lake's storage options) ---


class _Lake:
    """One lake root (a region's lake or a replica) and its storage options."""

    def __init__(self, lake: RegionLake) -> None:
        self.uri = lake.uri.rstrip("/")
        self.options = dict(lake.storage_options)

    def fs(self, uri: str) -> tuple[Any, str]:
        return lake_filesystem(uri, storage_options=self.options)

    def listing(self, uri: str) -> list[Any]:
        import pyarrow.fs as pafs

        fs, path = self.fs(uri)
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))  # type: ignore[no-any-return]

    def read(self, uri: str) -> bytes:
        fs, path = self.fs(uri)
        with fs.open_input_stream(path) as stream:
            return stream.read()  # type: ignore[no-any-return]

    def size(self, uri: str) -> int | None:
        import pyarrow.fs as pafs

        fs, path = self.fs(uri)
        info = fs.get_file_info(path)
        return None if info.type == pafs.FileType.NotFound else int(info.size)

    def write(self, uri: str, payload: bytes) -> None:
        fs, path = self.fs(uri)
        parent = path.rsplit("/", 1)[0]
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(payload)

    def put_if_absent(self, uri: str, payload: bytes) -> bool:
        """Write `uri` only if it does not exist; False when it already did. Local files: a hard link of a
        complete temporary file, atomic. Object stores: checked, then written (the replicator is the replica's
        only writer while its region is active; a failover stops it before promoting)."""
        fs, path = self.fs(uri)
        if is_local(uri):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temp = f"{os.path.dirname(path)}/.{uuid.uuid4().hex}.tmp"
            with open(temp, "wb") as handle:
                handle.write(payload)
            try:
                os.link(temp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(temp)
        if self.size(uri) is not None:
            return False
        self.write(uri, payload)
        return True

    def move(self, src: str, dst: str) -> None:
        fs, path = self.fs(src)
        _, target = self.fs(dst)
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        fs.move(path, target)

    def log_versions(self, table: str) -> dict[int, Any]:
        """Commit version -> its file info (mtime for the lag)."""
        out = {}
        for info in self.listing(f"{table}/_delta_log"):
            match = _COMMIT.match(info.base_name)
            if match:
                out[int(match.group(1))] = info
        return out


def _commit_uri(table: str, version: int) -> str:
    return f"{table}/_delta_log/{version:020d}.json"


def _added_paths(commit: bytes) -> list[str]:
    """The table-relative data files a commit adds (add and cdc actions)."""
    paths = []
    for line in commit.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        for kind in ("add", "cdc"):
            if kind in action and "://" not in action[kind]["path"]:
                paths.append(unquote(action[kind]["path"]))
    return paths


def _tenants_in(payload: bytes) -> set[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(pa.BufferReader(payload))
    if "tenant_id" not in parquet.schema_arrow.names:
        return set()
    column = parquet.read(columns=["tenant_id"]).column("tenant_id")
    return {str(v) for v in column.unique().to_pylist() if v is not None}


def _snapshot(uri: str, options: Mapping[str, str], version: int) -> tuple[frozenset[str], int]:
    from deltalake import DeltaTable

    table = DeltaTable(uri, version=version, storage_options=dict(options) or None)
    actions = table.get_add_actions(flatten=True)
    rows = 0
    if "num_records" in actions.schema.names:
        rows = sum(int(r or 0) for r in list(actions.column("num_records").to_pylist()))
    return frozenset(table.file_uris()), rows


def _relative_files(files: frozenset[str], root: str) -> frozenset[str]:
    return frozenset(f.removeprefix(root).lstrip("/") for f in files)


# --- one table ------------------------------------------------------------------------------------------


def ship_table(
    source: _Lake,
    target: _Lake,
    relative: str,
    *,
    guard: TenantGuard | None = None,
    discard_diverged: bool = False,
    verify: bool = True,
) -> ShipResult:
    """Ship every commit of `relative` that the target lacks (see the module docstring)."""
    src, dst = f"{source.uri}/{relative}", f"{target.uri}/{relative}"
    result = ShipResult(relative)
    src_versions = source.log_versions(src)
    dst_versions = target.log_versions(dst)
    if not src_versions:
        return result
    head = _agreed_head(source, target, src, dst, src_versions, dst_versions, result, discard_diverged)
    for version in sorted(v for v in src_versions if v > head):
        commit = source.read(_commit_uri(src, version))
        files = {path: source.read(f"{src}/{path}") for path in _added_paths(commit)}
        if guard is not None:
            tenants: set[str] = set()
            for payload in files.values():
                tenants |= _tenants_in(payload)
            guard(tenants)
        for path, payload in files.items():
            if target.size(f"{dst}/{path}") != len(payload):
                target.write(f"{dst}/{path}", payload)
                result.files_copied += 1
                result.bytes_copied += len(payload)
        if not target.put_if_absent(_commit_uri(dst, version), commit) and \
                target.read(_commit_uri(dst, version)) != commit:
            raise ReplicationDivergedError(f"replica {dst} holds another commit at version {version}",
                                           table=relative, version=version)
        if verify:
            _verify(source, target, src, dst, version)
        result.versions.append(version)
    if result.versions:
        _copy_checkpoints(source, target, src, dst, max(result.versions))
    return result


def _agreed_head(
    source: _Lake, target: _Lake, src: str, dst: str, src_versions: dict[int, Any], dst_versions: dict[int, Any],
    result: ShipResult, discard_diverged: bool,
) -> int:
    """The newest version both logs hold with the same commit (-1: none). Target commits past it that the
    source does not share are an error, or (failback, `discard_diverged`) moved aside under `_diverged/`."""
    if not dst_versions:
        return -1
    fork = -1
    for version in sorted(dst_versions, reverse=True):
        if version in src_versions and source.read(_commit_uri(src, version)) == target.read(_commit_uri(dst, version)):
            fork = version
            break
    diverged = sorted(v for v in dst_versions if v > fork)
    if not diverged:
        return fork
    if min(src_versions) > fork + 1 and fork >= 0:
        raise ReplicationDivergedError(f"source log of {src} no longer holds version {fork + 1}", table=result.relative)
    if not discard_diverged:
        raise ReplicationDivergedError(
            f"replica {dst} diverged from {src} after version {fork} (versions {diverged[0]}..{diverged[-1]})",
            table=result.relative, fork=fork)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for version in diverged:
        target.move(_commit_uri(dst, version), f"{dst}/_diverged/{stamp}/{version:020d}.json")
    for info in target.listing(f"{dst}/_delta_log"):
        match = _CHECKPOINT.match(info.base_name)
        if (match and int(match.group(1)) > fork) or info.base_name == "_last_checkpoint":
            target.move(f"{dst}/_delta_log/{info.base_name}", f"{dst}/_diverged/{stamp}/{info.base_name}")
    result.diverged_moved = diverged
    logger.warning("moved diverged commits aside", extra={"fields": {"table": dst, "versions": diverged}})
    return fork


def _verify(source: _Lake, target: _Lake, src: str, dst: str, version: int) -> None:
    src_files, src_rows = _snapshot(src, source.options, version)
    dst_files, dst_rows = _snapshot(dst, target.options, version)
    if _relative_files(src_files, src) != _relative_files(dst_files, dst) or src_rows != dst_rows:
        raise ReplicationDivergedError(
            f"replica {dst} at version {version} differs from its source: {len(dst_files)} files / {dst_rows} rows "
            f"against {len(src_files)} / {src_rows}", version=version)


def _copy_checkpoints(source: _Lake, target: _Lake, src: str, dst: str, head: int) -> None:
    """Checkpoints up to the shipped head come along, so replica readers need not replay the whole log."""
    for info in source.listing(f"{src}/_delta_log"):
        match = _CHECKPOINT.match(info.base_name)
        if match and int(match.group(1)) <= head and target.size(f"{dst}/_delta_log/{info.base_name}") is None:
            target.write(f"{dst}/_delta_log/{info.base_name}", source.read(f"{src}/_delta_log/{info.base_name}"))


# --- a region -------------------------------------------------------------------------------------------


def replication_pair(settings: Settings, region: str, direction: Direction) -> tuple[_Lake, _Lake]:
    """(source, target) lakes of a region's replication: home -> replica, or replica -> home on failback."""
    home, replica = _Lake(region_lake(settings, region)), _Lake(replica_lake(settings, region))
    return (home, replica) if direction == "forward" else (replica, home)


def region_tables(lake: _Lake) -> list[str]:
    """Lake-relative paths of every table under a lake, except the replicas it holds for other regions."""
    return [t.relative for t in discover_tables(lake.uri, include_audit=True, storage_options=lake.options)
            if not t.relative.startswith(f"{REPLICA_DIR}/")]


def residency_guard(settings: Settings, region: str) -> TenantGuard:
    """Refuse rows of tenants that may not be stored in `region` (unknown tenant ids pass: quarantined rows)."""
    directory = get_registry(settings).tenant_directory(fresh=True)

    def check(tenant_ids: set[str]) -> None:
        refused = sorted(t for t in tenant_ids if t in directory and region not in allowed_regions(settings,
                                                                                                    directory[t]))
        if refused:
            raise ResidencyError(
                f"rows of residency-restricted tenant(s) {', '.join(refused)} may not be replicated to {region}; "
                "place them dedicated, or pair their region with one in their jurisdiction", tenants=refused)

    return check


def _withheld(settings: Settings, relative: str, peer: str) -> bool:
    """A dedicated table of a tenant that may not be stored in the peer region."""
    parts = relative.split("/")
    if len(parts) < 3 or parts[1] != "tenants":
        return False
    info = get_registry(settings).tenant_directory().get(parts[2])
    return info is not None and peer not in allowed_regions(settings, info)


def replicate_region(
    region: str,
    *,
    direction: Direction = "forward",
    settings: Settings | None = None,
    verify: bool = True,
    progress: Progress | None = None,
) -> RegionPass:
    """One pass over every table of a region's lake (forward) or of its promoted replica (reverse, before a
    failback). A table refused for residency is reported blocked; the other tables still ship."""
    settings = settings or get_settings()
    peer = peer_region(settings, region)
    source, target = replication_pair(settings, region, direction)
    run = RegionPass(region, direction, source.uri, target.uri)
    guard = residency_guard(settings, peer) if direction == "forward" else None
    with stage("dr_replicate", region=region, direction=direction) as summary:
        tables = region_tables(source)
        for done, relative in enumerate(tables):
            if direction == "forward" and _withheld(settings, relative, peer):
                run.tables.append(ShipResult(relative, withheld=True))
                continue
            try:
                # the target never serves while it is replicated to (forward: the region is active; reverse: it
                # is failed over), so commits only it holds are leftovers of a fenced writer: moved aside
                run.tables.append(ship_table(source, target, relative, guard=guard, verify=verify,
                                             discard_diverged=True))
            except ResidencyError as exc:
                logger.error("replication blocked", extra={"fields": {"table": relative, "error": exc.message}})
                run.tables.append(ShipResult(relative, blocked=exc.message))
            if progress is not None:
                progress(relative, done + 1, len(tables))
        summary.rows = run.versions
        summary.extra.update(tables=len(tables), versions=run.versions, blocked=len(run.blocked),
                             files=sum(t.files_copied for t in run.tables),
                             bytes=sum(t.bytes_copied for t in run.tables))
    return run


def replicate_all(settings: Settings | None = None, *, progress: Progress | None = None) -> list[RegionPass]:
    """One pass over every region with a peer: forward while it is active, reverse while it is failed over
    (catching its home lake up before a failback). Regions mid-transition are left to the command running it."""
    settings = settings or get_settings()
    passes = []
    for region, state in cached_states(settings).items():
        peer = settings.region_peers.get(region)
        if peer not in settings.regions or region_lake(settings, region).uri == region_lake(settings, peer).uri:
            continue  # no peer, or no separate failure domain (SHIRONZI_REGION_LAKES gives none): nothing to ship
        direction: Direction | None = {"active": "forward", "failed_over": "reverse"}.get(state.state)  # type: ignore[assignment]
        if direction is None:
            continue
        try:
            passes.append(replicate_region(region, direction=direction, settings=settings, progress=progress))
        except OSError as exc:  # the other side is unreachable (its region is down): try again next pass
            logger.warning("replication pass failed", extra={"fields": {"region": region, "error": str(exc)}})
    return passes


# --- lag ------------------------------------------------------------------------------------------------


def region_lag(region: str, *, direction: Direction = "forward", settings: Settings | None = None) -> list[TableLag]:
    """Per table: source and replica versions and the age of the oldest commit not yet shipped."""
    settings = settings or get_settings()
    source, target = replication_pair(settings, region, direction)
    peer = peer_region(settings, region)
    now = time.time()
    lags = []
    for relative in region_tables(source):
        if direction == "forward" and _withheld(settings, relative, peer):
            continue
        src = source.log_versions(f"{source.uri}/{relative}")
        dst = target.log_versions(f"{target.uri}/{relative}")
        head, replica = max(src, default=-1), max(dst, default=-1)
        pending = sorted(v for v in src if v > replica)
        age = 0.0
        if pending:
            mtime = src[pending[0]].mtime
            age = max(0.0, now - mtime.timestamp()) if mtime is not None else 0.0
        lags.append(TableLag(relative, head, replica, age))
    return lags


def report_lag(settings: Settings | None = None) -> dict[str, list[TableLag]]:
    """Every replicated region's lag, logged as one `dr_lag` stage (the metrics observer exports it as
    `shironzi_dr_replication_lag_versions` / `_seconds`)."""
    settings = settings or get_settings()
    out: dict[str, list[TableLag]] = {}
    with stage("dr_lag") as summary:
        for region, state in cached_states(settings).items():
            if settings.region_peers.get(region) not in settings.regions or state.state.startswith("failing"):
                continue
            direction: Direction = "reverse" if state.state == "failed_over" else "forward"
            try:
                out[region] = region_lag(region, direction=direction, settings=settings)
            except OSError as exc:
                logger.warning("lag unknown", extra={"fields": {"region": region, "error": str(exc)}})
        summary.rows = sum(len(lags) for lags in out.values())
        summary.extra["lag"] = {region: metric_lag(lags) for region, lags in out.items()}
    return out


def metric_lag(lags: list[TableLag]) -> dict[str, list[float]]:
    """Lag per table for metrics: dedicated tenants' tables folded into `{region}/tenants/*/...` (the worst of
    them), so no label names a tenant and the label count does not grow with tenants."""
    folded: dict[str, list[float]] = {}
    for lag in lags:
        parts = lag.relative.split("/")
        key = "/".join([*parts[:2], "*", *parts[3:]]) if len(parts) > 2 and parts[1] == "tenants" else lag.relative
        worst = folded.setdefault(key, [0, 0.0])
        folded[key] = [max(worst[0], lag.lag_versions), max(worst[1], round(lag.lag_seconds, 3))]
    return folded


def residency_violations(settings: Settings | None = None) -> list[tuple[str, str, str]]:
    """Scan every Parquet file of every configured region lake: (file, tenant, region) for each registered
    tenant whose rows sit in a region outside its residency (home and replica). Empty when all is well."""
    import pyarrow.fs as pafs

    settings = settings or get_settings()
    directory = get_registry(settings).tenant_directory(fresh=True)
    found = []
    for region, configured in sorted(settings.region_lakes.items()):
        lake = _Lake(configured)
        fs, base = lake.fs(lake.uri)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet") or "/_delta_log/" in info.path:
                continue
            with fs.open_input_stream(info.path) as stream:
                tenants = _tenants_in(stream.read())
            found += [(info.path, t, region) for t in sorted(tenants)
                      if t in directory and region not in allowed_regions(settings, directory[t])]
    return found
