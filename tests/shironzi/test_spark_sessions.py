"""A Spark session whose server has gone is dropped before MLflow asks it anything.

The finding (the CI run of stop 35): after a Spark server used in the process had stopped, its session stayed
pyspark's active one. MLflow asks the active session for a registry URI whenever it builds a client without one
or starts a run, so each such call retried against the dead server for about ten minutes
(`test_mlflow_replica`'s fixture, which calls mlflow directly, timed out at 600 s).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shironzi.errors import ServiceUnavailableError
from shironzi.settings import get_settings
from shironzi.spark_sessions import drop_unreachable_sessions
from tests._services import free_port, sail_server
from transformations.spark import get_spark, stop_spark

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(300)  # without the fix each MLflow call below retries for ~600 s
def test_a_session_whose_server_stopped_is_dropped_before_mlflow_asks_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow
    from pyspark.sql import SparkSession

    from models.tracking import configure_mlflow, ensure_experiment

    stop_spark()
    port = free_port()
    monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", f"sc://127.0.0.1:{port}")
    get_settings.cache_clear()
    try:
        with sail_server(port, tmp_path / "sail.log"):
            session = get_spark()
            assert session.sql("select 1 as one").collect()[0].one == 1
            assert drop_unreachable_sessions() == []  # a live server's session is kept
            assert SparkSession.getActiveSession() is session
        # the server has stopped; its session is still pyspark's active one, as after a cluster restart
        assert SparkSession.getActiveSession() is session and not session.is_stopped

        started = time.monotonic()
        configure_mlflow()
        with mlflow.start_run(experiment_id=ensure_experiment("spark-gone")) as run:
            mlflow.log_metric("auc", 0.5)
        assert mlflow.get_run(run.info.run_id).data.metrics == {"auc": 0.5}
        assert time.monotonic() - started < 60  # seconds, not ten minutes per MLflow call
        assert session.is_stopped and SparkSession.getActiveSession() is None

        # the cached session of the gone server is not handed out again: one clear error while it is down
        with pytest.raises(ServiceUnavailableError, match="does not answer"):
            get_spark()
        with sail_server(port, tmp_path / "sail-again.log"):  # and a new session once it is back
            again = get_spark()
            assert again is not session and again.sql("select 2 as two").collect()[0].two == 2
    finally:
        stop_spark()


def test_nothing_is_dropped_when_no_session_exists() -> None:
    stop_spark()
    assert drop_unreachable_sessions() == []
