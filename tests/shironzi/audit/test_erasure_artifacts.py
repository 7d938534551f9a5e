"""Erasure reaches MLflow artifacts: the holdout Parquet of a training run is rewritten without the subject,
input examples of a run trained on the subject flag the run and queue its model version for retraining, the
receipt lists each artifact, and the verification scan reads the artifact store (embedded store here, a
real `mlflow server` in the integration test)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shironzi.audit.erasure import erase_subject, verify_erased, verify_receipt
from shironzi.audit.erasure_artifacts import RETRAIN_TAG, RUN_FLAG_TAG
from shironzi.audit.erasure_scan import Matcher
from shironzi.audit.log import record_training_run
from shironzi.privacy.tokens import pseudonym
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import get_keystore
from tests.shironzi.audit._fixtures import build_lake, parquet_files_holding

ADMIN = TenantContext.admin(actor="dpo@platform", purpose="gdpr_erasure")
MODEL = "erasure-test-churn"


@dataclass
class TrainingRun:
    run_id: str
    model_id: str
    version: str


def _holdout(pairs: list[tuple[str, str]]) -> pa.Table:
    return pa.table({
        "tenant_id": [t for t, _ in pairs],
        "customer_id": [c for _, c in pairs],
        "recency_days": [float(i) for i in range(len(pairs))],
        "label": [i % 2 for i in range(len(pairs))],
    })


def _log_training_run(tmp: Path, subject_rows: list[tuple[str, str]]) -> TrainingRun:
    """A run as models/ logs one (holdout.parquet, a nested Parquet, a logged model with an input example,
    a registered version), made with the real MLflow client against the configured tracking store."""
    from models.tracking import configure_mlflow, ensure_experiment

    client = configure_mlflow()
    experiment = ensure_experiment("erasure-tests")
    run = client.create_run(experiment, run_name="churn")
    run_id = run.info.run_id
    tmp.mkdir(parents=True, exist_ok=True)
    pq.write_table(_holdout([*subject_rows, ("t_a", "c_2"), ("t_a", "c_12"), ("t_b", "c_1")]), tmp / "holdout.parquet")
    client.log_artifact(run_id, str(tmp / "holdout.parquet"))
    (tmp / "eval").mkdir(exist_ok=True)
    pq.write_table(_holdout([subject_rows[0], ("t_b", "c_1")]), tmp / "eval" / "scores.parquet")
    client.log_artifact(run_id, str(tmp / "eval" / "scores.parquet"), artifact_path="eval")
    (tmp / "features.json").write_text(json.dumps({"names": ["recency_days"]}))  # holds no rows
    client.log_artifact(run_id, str(tmp / "features.json"))
    model = client.create_logged_model(experiment, name="model", source_run_id=run_id)
    (tmp / "input_example.json").write_text(json.dumps({"columns": ["recency_days"], "data": [[0.0], [1.0]]}))
    client.log_model_artifact(model.model_id, str(tmp / "input_example.json"))
    client.set_terminated(run_id)
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, source=model.artifact_location, run_id=run_id, model_id=model.model_id)
    return TrainingRun(run_id, model.model_id, str(version.version))


def _erase_and_check(home: Path, artifact_dir: Path, tmp: Path) -> tuple[str, str]:
    """Erase t_a/c_1 after a training run held it; returns (request id, run id) with the subject put back
    into the run's holdout afterwards."""
    from models.tracking import configure_mlflow

    token = pseudonym(get_keystore().get_or_create_key("t_a"), "c_1")
    tables = build_lake(token=token)
    trained = _log_training_run(tmp / "run", [("t_a", "c_1"), ("t_a", token)])
    record_training_run("trainer", run_id=trained.run_id, model_name=MODEL, model_version=trained.version,
                        inputs=[(tables["features"], 0)])
    subject = {"c_1", token}.__contains__
    assert parquet_files_holding(artifact_dir, "t_a", subject)  # the run holds the subject

    receipt = erase_subject(ADMIN, "t_a", "c_1")

    assert parquet_files_holding(home, "t_a", subject) == []
    assert parquet_files_holding(artifact_dir, "t_a", subject) == []
    client = configure_mlflow()
    holdout = pq.read_table(client.download_artifacts(trained.run_id, "holdout.parquet", str(tmp / "after")))
    assert sorted(zip(holdout.column("tenant_id").to_pylist(), holdout.column("customer_id").to_pylist(),
                      strict=True)) == [("t_a", "c_12"), ("t_a", "c_2"), ("t_b", "c_1")]
    assert holdout.schema == _holdout([("t", "c")]).schema
    done = {a["artifact"]: a for a in receipt.artifacts}
    assert done[f"runs/{trained.run_id}/holdout.parquet"]["action"] == "rewritten"
    assert done[f"runs/{trained.run_id}/holdout.parquet"]["rows_removed"] == 2
    assert done[f"runs/{trained.run_id}/eval/scores.parquet"]["rows_removed"] == 1
    example = done[f"models/{trained.model_id}/input_example.json"]
    assert example["action"] == "flagged" and example["run_id"] == trained.run_id
    assert not any(a.endswith("features.json") for a in done)
    assert client.get_run(trained.run_id).data.tags[RUN_FLAG_TAG] == receipt.request_id
    assert client.get_model_version(MODEL, trained.version).tags[RETRAIN_TAG] == receipt.request_id
    assert receipt.retraining_queued == [{"model": MODEL, "model_version": trained.version}]
    assert receipt.verification["ok"] and receipt.verification["artifact_matches"] == {}
    assert verify_receipt(receipt.request_id).ok

    # The verification scan reads the artifact store: a subject row put back into an artifact is found.
    pq.write_table(_holdout([("t_a", "c_1")]), tmp / "holdout.parquet")
    client.log_artifact(trained.run_id, str(tmp / "holdout.parquet"))
    matcher = Matcher("t_a", "subject", frozenset(receipt.subject_digests))
    again = verify_erased(matcher)
    assert not again.ok and again.artifact_matches == {f"runs/{trained.run_id}/holdout.parquet": 1}
    assert not verify_receipt(receipt.request_id).ok
    return receipt.request_id, trained.run_id


def test_erasure_rewrites_mlflow_artifacts_in_the_embedded_store(
    audit_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shironzi.cli import main

    request_id, run_id = _erase_and_check(audit_home, audit_home / "mlflow", tmp_path / "work")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main.run(["gdpr", "verify", request_id])
    error = capsys.readouterr().err
    assert exited.value.code == 1 and f"runs/{run_id}/holdout.parquet" in error, error


def test_tenant_erasure_removes_the_tenant_from_artifacts(audit_home: Path, tmp_path: Path) -> None:
    from shironzi.audit.erasure import erase_tenant

    build_lake()
    trained = _log_training_run(tmp_path / "run", [("t_a", "c_1")])
    receipt = erase_tenant(ADMIN, "t_a", require_offboarding=False)
    holdout = audit_home / "mlflow"
    assert not [p for p in holdout.rglob("*.parquet") if "t_a" in pq.read_table(p).column("tenant_id").to_pylist()]
    assert {a["artifact"] for a in receipt.artifacts if a["action"] == "rewritten"} == {
        f"runs/{trained.run_id}/holdout.parquet", f"runs/{trained.run_id}/eval/scores.parquet"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(audit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real `mlflow server` proxying its artifact store (mlflow-artifacts:/); yields the store directory."""
    store = tmp_path / "server-artifacts"
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                time.sleep(0.3)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        get_settings.cache_clear()
        yield store
    finally:
        process.terminate()
        process.wait(timeout=30)
        get_settings.cache_clear()


@pytest.mark.integration
@pytest.mark.slow
def test_erasure_rewrites_artifacts_on_the_tracking_server(
    audit_home: Path, mlflow_server: Path, tmp_path: Path
) -> None:
    _erase_and_check(audit_home, mlflow_server, tmp_path / "work")
    assert not (audit_home / "mlflow" / "mlflow.db").exists()  # everything went through the server
