"""Churn training on the session's small lake: time split, reproducibility from recorded Delta versions,
calibration, MLflow logging (params, metrics, plots, card, signature, inputs) and tenant routing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.models._fixtures import TrainedLake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKETS = ("small", "medium", "large")


def test_champion_metrics_are_good_and_calibrated(lake: TrainedLake) -> None:
    metrics = lake.churn.metrics
    assert metrics["holdout_rows"] >= 2000  # enough rows for the calibration error to mean something
    assert metrics["auc"] >= 0.75
    assert metrics["calibration_error"] <= 0.05
    assert any(f"auc_bucket_{b}" in metrics for b in BUCKETS)


def test_calibration_holds_through_the_inference_path(lake: TrainedLake) -> None:
    """Score the saved holdout with the serving predictor and recompute the calibration error independently."""
    import numpy as np
    import pyarrow.parquet as pq

    from models.inference import load_churn_predictor
    from models.tracking import run_artifact

    predictor = load_churn_predictor()
    assert predictor.version == lake.churn.model_version
    holdout = pq.read_table(run_artifact(lake.churn.run_id, "holdout.parquet"))
    rows = holdout.select(predictor.model_for("nobody").feature_names).to_pylist()
    labels = holdout.column("churned_within_horizon").to_numpy().astype(float)
    probabilities = np.asarray([p.probability for p in predictor.predict("nobody", rows)])
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(probabilities, edges) - 1, 0, 9)
    ece = sum(abs(probabilities[which == b].mean() - labels[which == b].mean()) * (which == b).sum()
              for b in range(10) if (which == b).any()) / len(labels)
    assert ece <= 0.05
    assert abs(probabilities.mean() - labels.mean()) < 0.03


def test_same_data_versions_and_seed_reproduce_the_metrics(lake: TrainedLake) -> None:
    """Append newer labels after training: pinned to the recorded versions, retraining gives the same metrics."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.compute as pc

    from models.churn import build_churn_dataset, train_churn
    from shironzi.lake import append, read_arrow, table_version

    labels_uri = next(uri for uri, _ in lake.churn.inputs if uri.endswith("/gold/fct_churn_labels"))
    recorded = dict(lake.churn.inputs)
    assert recorded[labels_uri] == table_version(labels_uri)
    current = read_arrow(labels_uri)
    newest = pc.max(current.column("snapshot_date")).as_py()
    extra = current.filter(pc.equal(current.column("snapshot_date"), newest))
    shifted = extra.set_column(extra.column_names.index("snapshot_date"), "snapshot_date",
                               pa.array([newest + timedelta(days=7)] * extra.num_rows, pa.date32()))
    append(labels_uri, shifted.cast(current.schema), partition_by="snapshot_date")
    assert table_version(labels_uri) > recorded[labels_uri]

    again = train_churn(seed=0, register=False, input_versions=recorded)
    assert dict(again.inputs) == recorded
    for key, value in lake.churn.metrics.items():
        if key == "train_seconds" or key.startswith("tenant_"):
            continue
        assert again.metrics[key] == pytest.approx(value, abs=1e-9), key

    moved = build_churn_dataset()  # unpinned: the newest versions, with the appended snapshot
    assert dict(moved.inputs)[labels_uri] == table_version(labels_uri)
    assert newest + timedelta(days=7) in set(moved.table.column("snapshot_date").to_pylist())


def test_run_logs_params_metrics_artifacts_signature_and_inputs(lake: TrainedLake) -> None:
    import mlflow

    from models.tracking import configure_mlflow, tracking_uri

    assert tracking_uri() == f"sqlite:///{lake.home.resolve() / 'mlflow' / 'mlflow.db'}"
    client = configure_mlflow()
    run = client.get_run(lake.churn.run_id)
    assert run.data.params["calibration"] == "isotonic" and int(run.data.params["features"]) >= 40
    for key in ("auc", "pr_auc", "log_loss", "calibration_error"):
        assert key in run.data.metrics
    assert any(k.startswith("auc_bucket_") for k in run.data.metrics)
    names = {a.path for a in client.list_artifacts(lake.churn.run_id)}
    assert {"model_card.md", "inputs.json", "holdout.parquet", "calibrator.json", "feature_importance.json"} <= names
    plots = {a.path for a in client.list_artifacts(lake.churn.run_id, "plots")}
    assert {"plots/roc.png", "plots/calibration.png", "plots/feature_importance.png"} <= plots
    inputs = json.loads(Path(client.download_artifacts(lake.churn.run_id, "inputs.json")).read_text())
    assert {(i["table"], i["version"]) for i in inputs} == set(lake.churn.inputs)
    card = Path(client.download_artifacts(lake.churn.run_id, "model_card.md")).read_text()
    assert "Holdout metrics" in card and "fct_churn_labels" in card
    # each tenant's churn windows (here the cadence floor of the dense demo tenants) in windows.json and the card;
    # the params count the tenants per distinct window (a param per tenant: 100,000 params at scale)
    per_tenant = json.loads(Path(client.download_artifacts(lake.churn.run_id, "windows.json")).read_text())
    assert per_tenant and set(per_tenant) <= set(lake.tenant_ids) - set(lake.churn_off)
    assert all(v.startswith("inactivity=") and v.endswith("d") for v in per_tenant.values())
    windows = {k: v for k, v in run.data.params.items() if k.startswith("window_")}
    assert sum(int(v.rsplit(": ", 1)[1].split()[0]) for v in windows.values()) == len(per_tenant)
    assert {v.split(": ")[0] for v in windows.values()} == set(per_tenant.values())
    assert "Churn definition per tenant" in card and "BG/NBD r=" in card
    assert {"customer_base.json", "bands.json"} <= names
    info = mlflow.models.get_model_info(f"models:/shironzi-churn/{lake.churn.model_version}")
    assert info.signature is not None and len(info.signature.inputs.input_names()) >= 40
    assert info.saved_input_example_info is not None
    assert (lake.home / "mlflow" / "artifacts").is_dir()


def test_training_rows_hold_lapsed_customers_and_customer_base_features(lake: TrainedLake) -> None:
    """Scoring meets lapsed customers, so training holds them, labelled by whether they came back."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from models.tracking import configure_mlflow

    client = configure_mlflow()
    holdout = pq.read_table(client.download_artifacts(lake.churn.run_id, "holdout.parquet"))
    silent = pc.greater_equal(holdout.column("days_since_last_event"), 30)
    assert pc.sum(silent).as_py() > 50  # lapsed customers are in the population
    labels = holdout.filter(silent).column("churned_within_horizon").to_pylist()
    assert 0 < sum(labels) < len(labels)  # some of them come back
    p_alive = holdout.column("cb_p_alive").drop_null().to_pylist()
    assert p_alive and all(0 < p <= 1 for p in p_alive)


def test_small_tenants_fall_back_to_the_global_model(lake: TrainedLake) -> None:
    from models.inference import load_churn_predictor
    from models.tracking import aliases, configure_mlflow, tenant_champion_alias

    found = aliases("shironzi-churn")
    predictor = load_churn_predictor()
    dedicated = {a[len("champion_"):] for a in found if a.startswith("champion_")}
    small = [t for t in lake.tenant_ids if t not in dedicated]
    assert small
    for tenant_id in small:
        assert predictor.model_for(tenant_id).version == found["champion"]
    # Big tenants were considered for a dedicated model (their own-holdout comparison is logged).
    assert any(k.startswith("tenant_") and k.endswith("_global_auc") for k in lake.churn.metrics)

    # Record a dedicated model for one tenant: routing follows the alias, the others stay global.
    tenant_id = small[0]
    client = configure_mlflow()
    client.set_registered_model_alias("shironzi-churn", tenant_champion_alias(tenant_id), lake.crippled_version)
    try:
        assert predictor.refresh_if_changed() is True
        assert predictor.model_for(tenant_id).version == lake.crippled_version
        assert predictor.model_for(small[-1]).version == found["champion"]
        [prediction] = predictor.predict(tenant_id, [{"days_since_last_event": 3.0}])
        assert prediction.model_version == lake.crippled_version
    finally:
        client.delete_registered_model_alias("shironzi-churn", tenant_champion_alias(tenant_id))
    assert predictor.refresh_if_changed() is True
    assert predictor.model_for(tenant_id).version == found["champion"]
    assert predictor.refresh_if_changed() is False


def test_predict_returns_bands_and_three_readable_reasons(lake: TrainedLake) -> None:
    from feature_store.materialize import get_online_features
    from models.bands import risk_band
    from models.inference import load_churn_predictor
    from shironzi.errors import InvalidInputError
    from shironzi.lake import read_arrow

    predictor = load_churn_predictor()
    tenant_id = next(t for t in lake.tenant_ids if t not in lake.churn_off)
    scores_uri = next(u for u in _prediction_tables(lake) if "/tenants/" not in u)
    customers = read_arrow(scores_uri, columns=["customer_id"], tenant_id=tenant_id).column("customer_id")
    ids = customers.to_pylist()[:5] if customers.length() else ["cus_0000001"]
    rows = get_online_features(tenant_id, ids, predictor.feature_names)
    predictions = predictor.predict(tenant_id, rows)
    assert len(predictions) == len(ids)
    thresholds = predictor.model_for(tenant_id).bands.get(tenant_id)
    assert thresholds is not None and 0 < thresholds[0] <= thresholds[1] < 1  # the tenant's own bands
    assert all(not ref.startswith("customer_base:") for ref in predictor.feature_names)  # derived, not stored
    for prediction in predictions:
        assert 0.0 <= prediction.probability <= 1.0
        assert prediction.risk_band == risk_band(prediction.probability, thresholds)
        assert 1 <= len(prediction.reasons) <= 3
        assert all(set(r) == {"feature", "label", "contribution"} and r["label"][0].isupper()
                   for r in prediction.reasons)
        assert prediction.model_name == "shironzi-churn"
    with pytest.raises(InvalidInputError):
        predictor.predict(tenant_id, [{"events_30d": "many"}])
    with pytest.raises(InvalidInputError):
        predictor.predict(tenant_id, {"events_30d": 1.0})  # type: ignore[arg-type]


def _prediction_tables(lake: TrainedLake) -> list[str]:
    from models.scoring import score_churn

    return list(score_churn().table_versions)


def test_a_training_cap_samples_by_bucket_and_label_and_stays_calibrated(
    lake: TrainedLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SHIRONZI_MODEL_MAX_TRAINING_ROWS below the labelled rows, the trainer gets at most the cap, the churn
    rate and tenant-size mix of the sample are those of the whole set, the model is still calibrated, and the run
    records the sample size and what was available."""
    import numpy as np

    import models.churn.train as churn_train
    from models.churn import build_churn_dataset, train_churn
    from models.tracking import configure_mlflow
    from shironzi.settings import get_settings

    whole = build_churn_dataset().table
    cap = whole.num_rows // 2
    monkeypatch.setenv("SHIRONZI_MODEL_MAX_TRAINING_ROWS", str(cap))
    get_settings.cache_clear()
    real_read = churn_train.read_feature_inputs
    read: list[tuple[Any, dict[str, Any]]] = []

    def recording_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        tables, inputs = real_read(*args, **kwargs)
        read.append((kwargs.get("among"), tables))
        return tables, inputs

    monkeypatch.setattr(churn_train, "read_feature_inputs", recording_read)
    sampled = build_churn_dataset()
    assert sampled.rows_available == whole.num_rows and 0 < sampled.table.num_rows <= cap
    # only the sampled customers' feature rows were read (kept as each table was scanned, not after)
    ((among, tables),) = read
    customers = set(zip(*(sampled.table.column(c).to_pylist() for c in ("tenant_id", "customer_id")), strict=True))
    assert among is not None and set(zip(*(among.column(c).to_pylist() for c in ("tenant_id", "customer_id")),
                                         strict=True)) == customers
    keyed = [t for t in tables.values() if "customer_id" in t.column_names]
    assert keyed and all(set(zip(t.column("tenant_id").to_pylist(), t.column("customer_id").to_pylist(),
                                 strict=True)) <= customers for t in keyed)
    for column in ("churned_within_horizon", "size_bucket"):
        shares = [np.unique(np.asarray(t.column(column).to_pylist()), return_counts=True)
                  for t in (whole, sampled.table)]
        assert list(shares[0][0]) == list(shares[1][0])
        np.testing.assert_allclose(shares[0][1] / whole.num_rows, shares[1][1] / sampled.table.num_rows, atol=0.01)

    rows_seen: list[int] = []
    real_fit = churn_train.fit_booster

    def counting_fit(x_train, y_train, x_valid, y_valid, **kwargs):  # type: ignore[no-untyped-def]
        rows_seen.append(len(y_train) + len(y_valid))
        return real_fit(x_train, y_train, x_valid, y_valid, **kwargs)

    monkeypatch.setattr(churn_train, "fit_booster", counting_fit)
    result = train_churn(seed=0, register=False)
    assert rows_seen and max(rows_seen) <= cap
    assert result.metrics["train_rows"] + result.metrics["valid_rows"] + result.metrics["holdout_rows"] <= cap
    assert result.metrics["calibration_error"] <= 0.06 and result.metrics["auc"] >= 0.7
    params = configure_mlflow().get_run(result.run_id).data.params
    assert int(params["rows"]) == sampled.table.num_rows and int(params["rows_available"]) == whole.num_rows
    assert int(params["max_training_rows"]) == cap
