"""A tracking server that does not answer: one clear ServiceUnavailableError within seconds, not mlflow's
minutes of retries ending in a traceback."""

from __future__ import annotations

import time

import pytest

from models.tracking import configure_mlflow
from shironzi.errors import ServiceUnavailableError
from shironzi.settings import Settings
from tests._services import free_port


def test_an_unreachable_tracking_server_is_one_clear_error_fast(settings: Settings) -> None:
    dead = free_port()
    unreachable = settings.model_copy(update={"mlflow_tracking_uri": f"http://user:s3cret@127.0.0.1:{dead}"})
    import mlflow  # noqa: F401 - its import (seconds on a busy machine) is not what is timed

    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as caught:
        configure_mlflow(unreachable)
    assert time.monotonic() - started < 10
    message = caught.value.message
    assert f"MLflow tracking server at http://127.0.0.1:{dead} is unreachable" in message, message
    assert "\n" not in message and "s3cret" not in message
