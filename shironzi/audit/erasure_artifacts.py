"""Erasure in MLflow artifacts: training runs keep rows of tenant data (a holdout Parquet, input examples).

Every run and every logged model of every experiment is walked through mlflow's artifact APIs, so the same
code covers the embedded store (SQLite + local artifacts under SHIRONZI_HOME) and a tracking server's
artifact store. For each artifact that holds rows:

- a Parquet file with a `tenant_id` column is read and, when it holds the subject's rows (tenant erasure:
  the tenant's rows), rewritten without them in place (`rewritten`);
- an input example (`input_example.json`, `serving_input_example.json`) holds feature rows that name no
  subject, so they cannot be attributed: when its run was trained on the subject's data the run is tagged
  and its model version queued for retraining (`flagged`); an example whose values name the subject loses
  those rows (`rewritten`).

The verification scan (`scan_artifacts`) re-reads the same artifacts and counts the subject's rows left.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from shironzi.audit.erasure_scan import Matcher, subject_row_mask, text_values
from shironzi.mlflow_client import mlflow_client
from shironzi.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

ROW_EXAMPLES = frozenset({"input_example.json", "serving_input_example.json"})
RUN_FLAG_TAG = "shironzi.erasure_pending"
RETRAIN_TAG = "shironzi.retrain_queued"
FLAGGED_REASON = "holds rows that name no subject: run flagged, model version queued for retraining"


@dataclass(frozen=True)
class ArtifactRoot:
    """Where one run's (or one logged model's) artifacts live, and the run it belongs to."""

    run_id: str
    uri: str
    label: str  # runs/<run id> or models/<model id>


@dataclass(frozen=True)
class Inspection:
    """One row-holding artifact read locally: how many of its rows hold the subject, and the rewrite."""

    subject_rows: int
    tenant_rows: int
    rewrite: Callable[[Path], None] | None


def tracking_uri() -> str | None:
    """The tracking server (MLFLOW_TRACKING_URI), else the embedded store when it was ever used; else None."""
    settings = get_settings()
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    if (settings.home / "mlflow" / "mlflow.db").exists():
        return settings.resolved_mlflow_tracking_uri
    return None


def _paged(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def artifact_roots(client: MlflowClient) -> list[ArtifactRoot]:
    """Every run's artifact root and every logged model's, in every experiment (deleted ones included)."""
    from mlflow.entities import ViewType

    experiments = [
        e.experiment_id
        for e in _paged(lambda t: client.search_experiments(view_type=ViewType.ALL, page_token=t))
    ]
    roots: list[ArtifactRoot] = []
    for start in range(0, len(experiments), 50):
        chunk = experiments[start : start + 50]
        runs = partial(client.search_runs, chunk, run_view_type=ViewType.ALL)
        for run in _paged(lambda t: runs(page_token=t)):  # noqa: B023 - consumed before the next chunk
            roots.append(ArtifactRoot(run.info.run_id, run.info.artifact_uri, f"runs/{run.info.run_id}"))
        models = partial(client.search_logged_models, chunk)
        for model in _paged(lambda t: models(page_token=t)):  # noqa: B023
            roots.append(
                ArtifactRoot(model.source_run_id or "", model.artifact_location, f"models/{model.model_id}")
            )
    return roots


def _row_artifacts(repo: ArtifactRepository, path: str | None = None) -> Iterator[str]:
    for info in repo.list_artifacts(path):
        if info.is_dir:
            yield from _row_artifacts(repo, info.path)
        elif info.path.endswith(".parquet") or PurePosixPath(info.path).name in ROW_EXAMPLES:
            yield info.path


def _inspect_parquet(local: Path, matcher: Matcher) -> Inspection:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(local)
    if "tenant_id" not in table.column_names:
        return Inspection(0, 0, None)
    tenant_rows = pc.sum(pc.equal(table.column("tenant_id").cast(pa.string()), matcher.tenant_id)).as_py() or 0
    mask = subject_row_mask(table, matcher)
    hits = sum(mask)

    def rewrite(target: Path) -> None:
        pq.write_table(table.filter(pa.array([not m for m in mask])), target)

    return Inspection(hits, tenant_rows, rewrite if hits else None)


def _example_rows(data: Any) -> list[Any] | None:
    """The row list of an MLflow input example (split orient, optionally under `dataframe_split`)."""
    if isinstance(data, dict):
        inner = data.get("dataframe_split", data)
        rows = inner.get("data") if isinstance(inner, dict) else None
        return rows if isinstance(rows, list) else None
    return data if isinstance(data, list) else None


def _inspect_example(local: Path, matcher: Matcher) -> Inspection:
    data = json.loads(local.read_text())
    rows = _example_rows(data)
    if rows is None:
        return Inspection(0, 0, None)

    def names_subject(row: Any) -> bool:
        return any(matcher.value_matches(v) for v in text_values(json.dumps(row)))

    keep = [r for r in rows if not names_subject(r)]
    hits = len(rows) - len(keep)

    def rewrite(target: Path) -> None:
        rows[:] = keep
        target.write_text(json.dumps(data))

    return Inspection(hits, 0, rewrite if hits else None)


def _walk(matcher: Matcher) -> Iterator[tuple[ArtifactRoot, ArtifactRepository, str, Path, Inspection]]:
    """Each row-holding artifact of every root, downloaded to a temporary file and inspected."""
    uri = tracking_uri()
    if uri is None:
        return  # MLflow was never used here: nothing to import or scan
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for root in artifact_roots(mlflow_client(uri)):
        repo = get_artifact_repository(root.uri, tracking_uri=uri)
        for path in _row_artifacts(repo):
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(repo.download_artifacts(path, dst_path=tmp))
                inspect = _inspect_parquet if path.endswith(".parquet") else _inspect_example
                yield root, repo, path, local, inspect(local, matcher)


def scan_artifacts(matcher: Matcher) -> dict[str, int]:
    """`<runs|models>/<id>/<path>` -> rows of the subject still held, for every MLflow artifact with rows."""
    found = {f"{root.label}/{path}": seen.subject_rows for root, _, path, _, seen in _walk(matcher)}
    return {artifact: rows for artifact, rows in found.items() if rows}


def erase_artifacts(matcher: Matcher, *, trained_on: Sequence[str], request_id: str) -> list[dict[str, Any]]:
    """Rewrite every artifact holding the subject's rows; flag the runs in `trained_on` (runs that read the
    subject's data) whose input examples cannot be attributed. Returns one receipt entry per artifact."""
    lineage = set(trained_on)
    done: list[dict[str, Any]] = []
    flagged: set[str] = set()
    for root, repo, path, local, found in _walk(matcher):
        entry: dict[str, Any] = {"run_id": root.run_id, "artifact": f"{root.label}/{path}"}
        if found.rewrite is not None:
            found.rewrite(local)
            parent = PurePosixPath(path).parent.as_posix()
            repo.log_artifact(str(local), artifact_path=None if parent == "." else parent)
            done.append({**entry, "action": "rewritten", "rows_removed": found.subject_rows})
        elif root.run_id in lineage and PurePosixPath(path).name in ROW_EXAMPLES:
            flagged.add(root.run_id)
            done.append({**entry, "action": "flagged", "rows_removed": 0, "reason": FLAGGED_REASON})
        elif found.tenant_rows:
            done.append({**entry, "action": "checked", "rows_removed": 0})
    uri = tracking_uri()
    if flagged and uri is not None:
        client = mlflow_client(uri)
        for run_id in sorted(flagged):
            client.set_tag(run_id, RUN_FLAG_TAG, request_id)
    return done


def queue_retraining(models: Sequence[dict[str, Any]], *, request_id: str) -> list[dict[str, Any]]:
    """Tag each registered model version trained on the subject so the next training run replaces it;
    returns the versions the registry knows (and tagged)."""
    uri = tracking_uri()
    if uri is None or not models:
        return []
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    queued = []
    for model in models:
        if not model.get("model_version"):
            continue
        try:
            client.set_model_version_tag(model["model"], str(model["model_version"]), RETRAIN_TAG, request_id)
        except MlflowException:
            continue  # not a registered version (e.g. a run logged without registering)
        queued.append({"model": model["model"], "model_version": str(model["model_version"])})
    return queued
