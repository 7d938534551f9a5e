"""The stage hook: installed observers see each finished stage, and one that breaks never breaks the stage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shironzi import observability
from shironzi.observability import StageSummary, stage


def test_observers_see_the_finished_summary_and_a_broken_one_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, int, float, bool]] = []

    @contextmanager
    def watching(summary: StageSummary) -> Iterator[None]:
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        finally:
            seen.append((summary.stage, summary.rows, summary.seconds, outcome == "failed"))

    def broken_on_enter(summary: StageSummary) -> contextmanager:  # type: ignore[valid-type]
        raise RuntimeError("observer cannot start")

    @contextmanager
    def broken_on_exit(summary: StageSummary) -> Iterator[None]:
        yield
        raise RuntimeError("observer cannot finish")

    monkeypatch.setattr(observability, "stage_observers", lambda: (broken_on_enter, watching, broken_on_exit))
    with caplog.at_level(logging.WARNING, logger="shironzi.observability"), stage("observed") as summary:
        summary.rows = 3
    assert seen[0][:2] == ("observed", 3) and seen[0][2] > 0 and seen[0][3] is False
    assert len([r for r in caplog.records if r.message == "stage observer failed"]) == 2
    caplog.clear()
    with pytest.raises(ValueError), stage("observed_failing"):
        raise ValueError("the stage's own error")
    assert seen[1][0] == "observed_failing" and seen[1][3] is True
    # only the observer that cannot start is reported: the stage's own error handed back is not the observer's
    assert len([r for r in caplog.records if r.message == "stage observer failed"]) == 1
