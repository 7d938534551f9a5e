"""Batch scoring into predictions/churn_scores (module-gated, idempotent per date) and the trend model's
forecasts into predictions/forecasts."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.models._fixtures import TrainedLake

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read_all(uris: list[str], filters: list | None = None):
    import pyarrow as pa

    from shironzi.lake import read_arrow

    return pa.concat_tables([read_arrow(u, filters=filters) for u in uris])


def test_only_tenants_with_churn_prediction_get_scores_and_rescoring_replaces(lake: TrainedLake) -> None:
    import json

    from models.bands import risk_band
    from models.predictions import churn_scores_schema
    from models.scoring import score_churn

    assert lake.churn_off
    day = date.today() - timedelta(days=1)
    first = score_churn(score_date=day, tenant_ids=lake.tenant_ids)
    assert set(first.skipped_tenants) == set(lake.churn_off)
    assert first.rows > 100 and not set(first.tenants) & set(lake.churn_off)
    table = _read_all(list(first.table_versions), [("score_date", "=", day)])
    assert table.schema.equals(churn_scores_schema()) and table.num_rows == first.rows
    assert not set(table.column("tenant_id").to_pylist()) & set(lake.churn_off)
    rows = table.to_pylist()
    from models.inference import load_churn_predictor

    predictor = load_churn_predictor()
    for row in rows[:200]:
        thresholds = predictor.model_for(row["tenant_id"]).bands.get(row["tenant_id"])
        assert row["risk_band"] == risk_band(row["churn_probability"], thresholds)
        reasons = json.loads(row["top_reasons"])
        assert 1 <= len(reasons) <= 3 and {"feature", "label", "contribution"} == set(reasons[0])
        assert row["model_version"] == lake.churn.model_version and row["score_date"] == day
        assert row["feature_timestamp"].date() <= day

    again = score_churn(score_date=day)
    assert again.rows == first.rows
    after = _read_all(list(again.table_versions), [("score_date", "=", day)])
    assert after.num_rows == table.num_rows  # the slice was replaced, not appended

    only_off = score_churn(score_date=day, tenant_ids=lake.churn_off)
    assert only_off.rows == 0 and only_off.tenants == [] and set(only_off.skipped_tenants) == set(lake.churn_off)


def test_score_write_records_the_feature_versions_and_models_it_used(lake: TrainedLake) -> None:
    """The churn-score write's audit event names the feature tables (at the versions read) and the model
    versions that produced the rows, not the predictions table itself."""
    import json

    from models.scoring import score_churn
    from shironzi.audit.log import read_audit_events
    from shironzi.lake import table_version
    from shironzi.lake.leases import normalise_uri

    day = date.today() - timedelta(days=2)
    result = score_churn(score_date=day, tenant_ids=lake.tenant_ids)
    assert result.table_versions
    writes = read_audit_events(filters=[("action", "=", "table_write")]).to_pylist()
    for uri, version in result.table_versions.items():  # one predictions table per region
        events = [e for e in writes
                  if e["resource"] == normalise_uri(uri) and json.loads(e["details"])["version"] == version]
        assert len(events) == 1
        details = json.loads(events[0]["details"])
        read = {i["table"]: i["version"] for i in details["inputs"]}
        assert read and all("/features/" in t for t in read) and normalise_uri(uri) not in read
        assert all(table_version(t) == v for t, v in read.items())  # nothing wrote features since
        if details.get("models"):
            assert {m["model"] for m in details["models"]} == {"shironzi-churn"}
    used = [m for d in writes if d["resource"] in map(normalise_uri, result.table_versions)
            for m in json.loads(d["details"]).get("models", [])]
    assert lake.churn.model_version in {m["version"] for m in used}


def test_scoring_logs_psi_to_the_champion_run_and_drift_flags_retraining(lake: TrainedLake) -> None:
    """Every scoring run logs PSI per feature and for the score to the champion's MLflow run (the Models page's
    drift panel) and to _platform/monitoring/drift; a top-10 feature past 0.2 tags the champion for retraining,
    which the train_models DAG's check turns into a training run on a non-training day."""
    import json

    import numpy as np
    import polars as pl

    from models.common import CHURN_MODEL
    from models.scoring import RETRAIN_TAG, record_drift, retrain_requested, score_churn
    from models.tracking import configure_mlflow, run_artifact
    from monitoring.drift import REFERENCE_ARTIFACT, RETRAIN_PSI, drift_uri
    from orchestration.pipeline import retrain_due
    from shironzi.lake import read_polars
    from shironzi.settings import get_settings

    settings = get_settings()
    client = configure_mlflow(settings)
    run_id = lake.churn.run_id
    reference = json.loads(run_artifact(run_id, REFERENCE_ARTIFACT).read_text())
    names = list(reference["features"])
    day = date.today() - timedelta(days=3)
    score_churn(score_date=day, tenant_ids=lake.tenant_ids)
    metrics = client.get_run(run_id).data.metrics
    assert {f"psi_{n}" for n in names} <= set(metrics) and "score_psi" in metrics
    assert all(value >= 0.0 for key, value in metrics.items() if key.startswith("psi_"))
    logged = read_polars(drift_uri(settings)).filter(pl.col("score_date") == day)
    assert set(logged["feature"]) == {*names, "score"} and set(logged["model_version"]) == {lake.churn.model_version}
    top = reference["ranked_features"][:10]
    shifted = any(metrics[f"psi_{n}"] > RETRAIN_PSI for n in top)
    assert logged["retrain"].to_list()[0] == shifted == (retrain_requested() is not None)

    # a run whose most important feature moved far away: the champion is flagged, and the check trains
    sunday = date(2026, 12, 6)
    monday = sunday + timedelta(days=1)

    def clear_flag() -> None:
        if RETRAIN_TAG in client.get_model_version(CHURN_MODEL, lake.churn.model_version).tags:
            client.delete_model_version_tag(CHURN_MODEL, lake.churn.model_version, RETRAIN_TAG)

    try:
        clear_flag()
        assert not retrain_due("churn", monday)
        matrix = np.tile(np.asarray([[e["edges"][-1] if e["edges"] else 0.0 for e in reference["features"].values()]],
                                    dtype=np.float32), (500, 1))
        matrix[:, names.index(top[0])] += 1e6
        report = record_drift(matrix, names, np.full(500, 0.99), model_version=lake.churn.model_version,
                              score_date=monday, settings=settings)
        assert report is not None and report.retrain and top[0] in report.flagged
        assert retrain_requested()["features"] == report.flagged
        assert retrain_due("churn", monday) and not retrain_due("trend", monday) and retrain_due("trend", sunday)
    finally:
        clear_flag()


def test_trend_beats_naive_logs_both_and_forecasts_only_trend_tenants(lake: TrainedLake) -> None:
    import json

    import pyarrow.compute as pc

    from models.predictions import forecasts_schema
    from models.scoring import eligible_tenants, write_forecasts
    from models.tracking import configure_mlflow
    from models.trend.train import evaluate_version_on_holdout

    metrics = lake.trend.metrics
    assert metrics["smape"] < metrics["baseline_smape"]
    assert metrics["series_trained"] == metrics["series_available"] > 0  # far under the row cap: every series
    assert 0.5 <= metrics["interval_coverage"] <= 1.0
    run = configure_mlflow().get_run(lake.trend.run_id)
    assert {"smape", "baseline_smape", "interval_coverage", "interval_scale", "smape_booster",
            "smape_statistical"} <= set(run.data.metrics)
    # the promotion gate rescores the registered version on its saved holdout: the same combined point forecast
    # (booster and statistical halves) as training scored, not the booster alone
    rescored = evaluate_version_on_holdout(lake.trend.model_version, lake.trend.run_id)
    assert rescored.primary == pytest.approx(metrics["smape"])
    assert rescored.primary != pytest.approx(metrics["smape_booster"])

    result = write_forecasts(tenant_ids=lake.tenant_ids)
    wanted = set(eligible_tenants("trend_forecast"))
    # Every trend tenant with daily KPIs in gold is forecast; nobody else is.
    assert len(result.tenants) >= 3 and set(result.tenants) <= wanted
    assert set(result.skipped_tenants) == set(lake.churn_off)
    table = _read_all(list(result.table_versions))
    assert table.schema.equals(forecasts_schema())
    assert set(table.column("tenant_id").to_pylist()) == set(result.tenants)
    assert table.num_rows == len(result.tenants) * 2 * 28
    assert pc.all(pc.less_equal(table.column("yhat_lower"), table.column("yhat"))).as_py()
    assert pc.all(pc.less_equal(table.column("yhat"), table.column("yhat_upper"))).as_py()
    assert sorted(set(table.column("horizon_day").to_pylist())) == list(range(1, 29))
    # stamped with the date of the data they were made from (gold's newest day, days before today), not today
    from datetime import UTC, datetime

    from models.trend.features import load_series

    newest = max(s.end for s in load_series(tenant_ids=result.tenants)[0])
    assert newest < datetime.now(UTC).date() and result.score_date == newest
    assert set(table.column("generated_date").to_pylist()) == {newest}
    assert write_forecasts().rows == table.num_rows
    assert _read_all(list(result.table_versions)).num_rows == table.num_rows
    from shironzi.audit.log import read_audit_events
    from shironzi.lake.leases import normalise_uri

    ours = {(normalise_uri(u), v) for u, v in result.table_versions.items()}  # this write's commits, not others'
    writes = [e for e in read_audit_events(filters=[("action", "=", "table_write")]).to_pylist()
              if (e["resource"], json.loads(e["details"]).get("version")) in ours]
    details = [json.loads(e["details"]) for e in writes]
    assert details and all(d["models"] == [{"model": "shironzi-trend", "version": lake.trend.model_version}]
                           for d in details)
    assert all(d["inputs"] and all("/gold/" in i["table"] for i in d["inputs"]) for d in details)


def test_batch_scoring_loads_the_champions_once_per_process(lake: TrainedLake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk a process scores reuses the loaded champions, re-reading only whether
    the aliases or the routing moved; loading them parses every tenant's bands and customer-base fits."""
    from models import scoring
    from shironzi.settings import get_settings

    first = scoring._scoring_predictor(get_settings())
    checked: list[object] = []
    monkeypatch.setattr(type(first), "refresh_if_changed", lambda self: checked.append(self) or False)
    assert scoring._scoring_predictor(get_settings()) is first
    assert checked == [first]


def test_batch_scoring_makes_one_call_per_model_not_per_tenant(lake: TrainedLake,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk's tenants that share a model are scored in one XGBoost call (one call per tenant was 100,000 calls,
    most of the scoring time at 100,000 tenants); each row keeps its own tenant's risk bands (checked above)."""
    from models import scoring
    from models.inference import ChurnPredictor, load_churn_predictor
    from shironzi.lake.groups import lake_groups
    from shironzi.settings import get_settings

    calls: list[list[str]] = []
    original = ChurnPredictor.predict_rows

    def spy(self: ChurnPredictor, model: object, owners: list[str], x: object, **kwargs: object) -> object:
        calls.append(list(owners))
        return original(self, model, owners, x, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ChurnPredictor, "predict_rows", spy)
    monkeypatch.setattr(ChurnPredictor, "predict_matrix", lambda *_, **__: pytest.fail("one tenant at a time"))
    result = scoring.score_churn(score_date=date.today() - timedelta(days=1), tenant_ids=lake.tenant_ids)
    predictor = load_churn_predictor()
    expected = sum(len({predictor.model_for(t).version for t in g.tenant_ids if t in result.tenants})
                   for g in lake_groups(result.tenants, get_settings()))
    assert len(calls) == expected < len(result.tenants)
    assert sum(map(len, calls)) == result.rows and max(len(set(c)) for c in calls) >= 2


def test_predict_rows_equals_scoring_each_tenant_alone(lake: TrainedLake) -> None:
    import numpy as np

    from models.inference import load_churn_predictor
    from models.scoring import eligible_tenants
    from shironzi.errors import InvalidInputError

    predictor = load_churn_predictor()
    model = predictor.model_for(eligible_tenants()[0])
    a, b = [t for t in eligible_tenants() if predictor.model_for(t) is model][:2]
    x = np.random.default_rng(3).random((8, len(model.feature_names))).astype(np.float32) * 30
    together = predictor.predict_rows(model, [a] * 5 + [b] * 3, x)
    assert together == predictor.predict_matrix(a, x[:5]) + predictor.predict_matrix(b, x[5:])
    with pytest.raises(InvalidInputError):
        predictor.predict_rows(model, [a], x)


def test_scoring_chunks_pack_tenants_by_the_rows_they_score(lake: TrainedLake) -> None:
    """Chunks follow the data: tenants in id order, packed up to max_rows customers (the customer_activity
    snapshots in the score date's TTL window, an upper bound of the rows scored), at most max_tenants each."""
    from collections import Counter

    import pyarrow.compute as pc

    from feature_store.offline import feature_table_uris, feature_timestamp_for
    from feature_store.registry import get_feature_view
    from models.scoring import eligible_tenants, score_churn, scoring_chunks, scoring_sizes
    from shironzi.errors import InvalidInputError
    from shironzi.lake import read_arrow
    from shironzi.settings import get_settings

    settings, day = get_settings(), date.today() - timedelta(days=1)
    tenants = eligible_tenants()
    sizes = scoring_sizes(tenants, day, settings=settings)
    view = get_feature_view("customer_activity")
    until = feature_timestamp_for(day)
    counted: Counter[str] = Counter()
    for uri in feature_table_uris(view, tenants, settings):
        table = read_arrow(uri, columns=["tenant_id", "feature_timestamp"])
        stamps = table.column("feature_timestamp")
        inside = pc.and_(pc.greater_equal(stamps, until - view.ttl), pc.less_equal(stamps, until))
        counted.update(table.filter(inside).column("tenant_id").to_pylist())
    assert sizes == {t: counted.get(t, 0) for t in tenants} and sum(sizes.values()) > 0
    result = score_churn(score_date=day, tenant_ids=tenants)
    per_tenant = Counter(t for u in result.table_versions
                         for t in read_arrow(u, filters=[("score_date", "=", day)]).column("tenant_id").to_pylist())
    assert per_tenant and all(per_tenant[t] <= sizes[t] for t in per_tenant)

    def chunks(max_rows: int, max_tenants: int) -> list[list[str]]:
        got = scoring_chunks(tenants, day, max_rows=max_rows, max_tenants=max_tenants, settings=settings)
        assert [t for c in got for t in c] == sorted(tenants)
        return got

    assert chunks(10**9, 10**6) == [sorted(tenants)]
    assert all(len(c) <= 2 for c in chunks(10**9, 2)) and len(chunks(10**9, 2)) == (len(tenants) + 1) // 2
    budget = max(sizes.values())
    packed = chunks(budget, 10**6)
    rows = [sum(sizes[t] for t in c) for c in packed]
    assert all(r <= budget for r in rows) and len(packed) > 1
    assert all(rows[i] + sizes[packed[i + 1][0]] > budget for i in range(len(packed) - 1))  # greedy: none fits more
    for bad in ((0, 1), (1, 0)):
        with pytest.raises(InvalidInputError):
            chunks(*bad)
