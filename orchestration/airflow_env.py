"""The Airflow environment built from the Shironzi settings: one function, used by `shironzi airflow ...`, the
tests and docker-compose alike, so Airflow always sees the same home, DAGs and metadata database.

- `AIRFLOW_HOME` = `{SHIRONZI_HOME}/airflow` (logs, config, the SQLite metadata database by default);
- the DAGs folder is `orchestration/dags` of this checkout; example DAGs are off;
- the metadata database is `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` when set (PostgreSQL in production), else
  SQLite under AIRFLOW_HOME;
- `orchestration/airflow_config` is put on PYTHONPATH for its `airflow_local_settings.py`.

No secret is written to a DAG file or to disk here: connections reach the tasks as Shironzi settings
(environment variables) that the public functions read through `get_settings()`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from shironzi.errors import ServiceUnavailableError
from shironzi.settings import Settings, get_settings

ORCHESTRATION_DIR = Path(__file__).resolve().parent
DAGS_FOLDER = ORCHESTRATION_DIR / "dags"
LOCAL_SETTINGS_DIR = ORCHESTRATION_DIR / "airflow_config"
PROJECT_ROOT = ORCHESTRATION_DIR.parent


def airflow_home(settings: Settings | None = None) -> Path:
    """`{SHIRONZI_HOME}/airflow`."""
    return (settings or get_settings()).home / "airflow"


def airflow_env(settings: Settings | None = None, *, base: dict[str, str] | None = None) -> dict[str, str]:
    """The full environment for an Airflow process (`base` defaults to this process's environment)."""
    settings = settings or get_settings()
    env = dict(os.environ if base is None else base)
    home = airflow_home(settings)
    python_path = [str(LOCAL_SETTINGS_DIR), str(PROJECT_ROOT)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env.update(
        {
            "SHIRONZI_HOME": str(settings.home),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.resolved_airflow_sql_alchemy_conn,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "PYTHONPATH": os.pathsep.join(python_path),
            # `airflow standalone` and the task runner start `airflow ...` by name: this environment's first.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])]),
        }
    )
    if settings.env == "dev":  # the local UI without a login; never outside dev
        env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    return env


def airflow_executable() -> str:
    """The `airflow` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("airflow")
    if beside.exists():
        return str(beside)
    found = shutil.which("airflow")
    if found is None:
        raise ServiceUnavailableError("the airflow command is not installed (pip install 'shironzi[airflow]')")
    return found


def airflow_command(*args: str) -> list[str]:
    return [airflow_executable(), *args]
