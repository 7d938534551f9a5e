"""MLflow clients for the kernel and `models/`: quiet defaults, and no dead Spark session for MLflow to ask.

MLflow asks the active Spark session for a registry URI whenever it builds a client or starts a run; a session
whose server has gone turns each ask into ten minutes of retries (`shironzi.spark_sessions`). `prepare_mlflow`
drops such a session first; mlflow is imported on use only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from shironzi.spark_sessions import drop_unreachable_sessions

if TYPE_CHECKING:
    from mlflow import MlflowClient

QUIET_DEFAULTS = {  # set unless the operator set them: no progress bars, telemetry or logged-model warnings
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_LOGGED_MODEL_WARNINGS": "false",
}


def prepare_mlflow() -> None:
    """Before MLflow is used in this process: its quiet defaults, and no Spark session of a gone server."""
    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    drop_unreachable_sessions()


def mlflow_client(uri: str) -> MlflowClient:
    """A client whose tracking and registry URI is `uri`."""
    prepare_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)
