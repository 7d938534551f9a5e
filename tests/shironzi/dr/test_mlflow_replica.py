"""Champion replication between two real MLflow registries: the peer loads the same champions, idempotently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shironzi.dr.mlflow_replica import REPLICA_TAG, replicate_champions
from shironzi.errors import InvalidInputError
from tests.shironzi.cli._fixtures import run_cli


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A source registry with a global champion, a tenant champion and a challenger; an empty peer."""
    import mlflow
    import xgboost as xgb
    from mlflow import MlflowClient

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    source = f"sqlite:///{tmp_path / 'eu' / 'mlflow.db'}"
    peer = f"sqlite:///{tmp_path / 'us' / 'mlflow.db'}"
    for region in ("eu", "us"):
        (tmp_path / region).mkdir()
    mlflow.set_tracking_uri(source)
    mlflow.set_registry_uri(source)
    try:
        experiment = mlflow.create_experiment("churn", artifact_location=(tmp_path / "eu" / "artifacts").as_uri())
        rng = np.random.default_rng(7)
        x = rng.random((60, 4))
        for seed in range(2):  # versions 1 (champion) and 2 (champion of t_acme)
            model = xgb.XGBClassifier(n_estimators=4, max_depth=2, random_state=seed)
            model.fit(x, (x[:, seed] > 0.5).astype(int))
            with mlflow.start_run(experiment_id=experiment):
                mlflow.xgboost.log_model(model, name="model", registered_model_name="churn",
                                         pip_requirements=[f"xgboost=={xgb.__version__}"], await_registration_for=0)
        client = MlflowClient(tracking_uri=source, registry_uri=source)
        first = client.get_model_version("churn", "1")  # version 3: a challenger, which is not copied
        client.create_model_version("churn", source=first.source, run_id=first.run_id)
        client.set_registered_model_alias("churn", "champion", "1")
        client.set_registered_model_alias("churn", "champion_t_acme", "2")
        client.set_registered_model_alias("churn", "challenger", "3")
        yield source, peer
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _predict(uri: str, alias: str, x: np.ndarray) -> np.ndarray:
    import mlflow.pyfunc
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("churn", alias)
    return np.asarray(mlflow.pyfunc.load_model(client.get_model_version_download_uri("churn", version.version))
                      .predict(x))


@pytest.mark.slow  # two small XGBoost models logged to a real MLflow registry (~20 s on a busy machine)
def test_champions_replicate_and_serve_the_same_predictions(
    registries: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    source, peer = registries
    report = replicate_champions(source, peer)

    assert report.versions_copied == 2
    assert {(m.alias, m.source_version) for m in report.models} == {("champion", "1"), ("champion_t_acme", "2")}
    x = np.random.default_rng(1).random((20, 4))
    for alias in ("champion", "champion_t_acme"):
        assert np.array_equal(_predict(peer, alias, x), _predict(source, alias, x))
    assert not np.array_equal(_predict(peer, "champion", x), _predict(peer, "champion_t_acme", x))
    client = MlflowClient(tracking_uri=peer, registry_uri=peer)
    versions = client.search_model_versions("name='churn'")
    assert sorted(v.tags[REPLICA_TAG] for v in versions) == ["churn/1", "churn/2"]  # no challenger
    assert "challenger" not in client.get_registered_model("churn").aliases

    # idempotent: nothing is copied again; a moved source alias moves at the peer, a dropped one goes
    source_client = MlflowClient(tracking_uri=source, registry_uri=source)
    source_client.set_registered_model_alias("churn", "champion", "2")
    source_client.delete_registered_model_alias("churn", "champion_t_acme")
    result = run_cli(capsys, "dr", "replicate-models", "--to", peer, "--source", source, "--json")
    assert result.code == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["versions_copied"] == 0 and len(client.search_model_versions("name='churn'")) == 2
    assert np.array_equal(_predict(peer, "champion", x), _predict(source, "champion", x))
    assert set(client.get_registered_model("churn").aliases) == {"champion"}


def test_replicating_onto_itself_is_refused(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(InvalidInputError, match="source itself"):
        replicate_champions(uri, uri)
    assert not (tmp_path / "mlflow.db").exists()
