"""The stage run log: compute stages are recorded through the real observer hook, frequent ones are buffered
until the flush interval, other stages are not recorded, and a failed recording never fails the stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from shironzi.settings import get_settings


def _runs() -> list[dict[str, object]]:
    from shironzi.lake import read_polars, table_exists
    from shironzi.metering.stage_log import stage_runs_uri

    uri = stage_runs_uri(get_settings())
    return read_polars(uri).sort("finished_at").to_dicts() if table_exists(uri) else []


def test_compute_stages_are_recorded_and_stream_flushes_batched(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shironzi.metering.stage_log import BUFFER, compute_group
    from shironzi.observability import stage

    BUFFER.take()
    monkeypatch.setenv("SHIRONZI_USAGE_FLUSH_SECONDS", "3600")
    get_settings.cache_clear()
    with stage("dashboard.daily_kpis"):
        pass
    with stage("ingest_batch", source="landing") as summary:
        summary.rows = 120
    runs = _runs()
    assert [(r["stage"], r["compute_group"], r["rows"], r["tenant_id"]) for r in runs] == [
        ("ingest_batch", "ingest", 120, None)]
    for _ in range(3):
        with stage("ingest_stream_flush", topic="events", worker="w0") as summary:
            summary.rows = 10
    assert len(_runs()) == 1  # buffered: no commit per flush
    with stage("ingest_stream", topic="events"):  # the ingestor's run ends: its flushes are written
        pass
    assert [r["stage"] for r in _runs()][1:] == ["ingest_stream_flush"] * 3
    assert compute_group("dbt_build") == "transform" and compute_group("ingest_stream") is None


def test_a_failed_stage_is_recorded_as_failed_and_recording_never_fails_a_stage(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shironzi.observability import stage

    with pytest.raises(RuntimeError, match="boom"), stage("features:offline"):
        raise RuntimeError("boom")
    assert [(r["stage"], r["failed"]) for r in _runs()] == [("features:offline", True)]
    monkeypatch.setenv("SHIRONZI_LAKE_URI", str(home / "a-file"))
    (home / "a-file").write_text("not a directory")  # the log cannot be written there
    get_settings.cache_clear()
    with stage("models:score_churn") as summary:
        summary.rows = 5
    assert summary.rows == 5  # the stage itself went through
    monkeypatch.setenv("SHIRONZI_USAGE_STAGE_LOG", "0")
    monkeypatch.delenv("SHIRONZI_LAKE_URI")
    get_settings.cache_clear()
    with stage("models:score_churn"):
        pass
    assert len(_runs()) == 1  # switched off: nothing more recorded
