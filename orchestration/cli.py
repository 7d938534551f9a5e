"""`shironzi airflow env|dags-test|standalone|states|dbt-manifest`: Airflow 3 with the Shironzi settings."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestration.airflow_env import DAGS_FOLDER, airflow_command, airflow_env, airflow_home
from shironzi.cli.options import parse_day
from shironzi.errors import InvalidInputError, OrchestrationError
from shironzi.settings import Settings, get_settings

console = Console(highlight=False)

airflow_app = typer.Typer(
    help="Airflow 3 for the Shironzi DAGs (AIRFLOW_HOME under SHIRONZI_HOME).", no_args_is_help=True
)

SHOWN_VARIABLES = (
    "SHIRONZI_HOME",
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    "PYTHONPATH",
)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: show nothing of it
        return "***"


def ensure_airflow_db(settings: Settings | None = None) -> Path:
    """`airflow db migrate` once per metadata database (a stamp under AIRFLOW_HOME remembers it)."""
    settings = settings or get_settings()
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    conn = settings.resolved_airflow_sql_alchemy_conn
    stamp = home / f".migrated-{hashlib.sha256(conn.encode()).hexdigest()[:12]}"
    if not stamp.exists():
        outcome = subprocess.run(  # noqa: S603 - our own airflow
            airflow_command("db", "migrate"), env=airflow_env(settings), capture_output=True, text=True, check=False
        )
        if outcome.returncode != 0:
            tail = (outcome.stderr or outcome.stdout).strip().splitlines()[-3:]
            raise OrchestrationError("airflow db migrate failed: " + " | ".join(tail))
        stamp.write_text(conn.split("://", 1)[0])
    ensure_airflow_pools(settings)
    return home


def ensure_airflow_pools(settings: Settings | None = None) -> None:
    """`airflow pools import` of the plan and dedicated pools (`orchestration.pools`), once per version of the
    pools file and metadata database; the DAGs' tasks reference them."""
    from orchestration.pools import POOLS_FILE

    settings = settings or get_settings()
    home = airflow_home(settings)
    conn = settings.resolved_airflow_sql_alchemy_conn
    digest = hashlib.sha256(conn.encode() + POOLS_FILE.read_bytes()).hexdigest()[:12]
    stamp = home / f".pools-{digest}"
    if stamp.exists():
        return
    outcome = subprocess.run(  # noqa: S603 - our own airflow
        airflow_command("pools", "import", str(POOLS_FILE)), env=airflow_env(settings), capture_output=True,
        text=True, check=False,
    )
    if outcome.returncode != 0:
        tail = (outcome.stderr or outcome.stdout).strip().splitlines()[-3:]
        raise OrchestrationError("airflow pools import failed: " + " | ".join(tail))
    stamp.write_text(str(POOLS_FILE))


def dags_test(
    dag_id: str,
    *,
    logical_date: date | None = None,
    conf: dict[str, Any] | None = None,
    mark_success_pattern: str | None = None,
    settings: Settings | None = None,
    log_path: Path | None = None,
) -> tuple[int, Path]:
    """Run `airflow dags test DAG [DATE] [-c CONF]` with the Shironzi environment; (exit code, log file).
    `mark_success_pattern` marks the matching tasks successful without running them."""
    settings = settings or get_settings()
    if not (DAGS_FOLDER / f"{dag_id}.py").exists():
        known = sorted(p.stem for p in DAGS_FOLDER.glob("[!_]*.py"))
        raise InvalidInputError(f"unknown DAG {dag_id!r}; known DAGs: {', '.join(known)}")
    home = ensure_airflow_db(settings)
    args = ["dags", "test", dag_id]
    if logical_date is not None:
        args.append(logical_date.isoformat())
    if conf:
        args += ["-c", json.dumps(conf)]
    if mark_success_pattern:
        args += ["--mark-success-pattern", mark_success_pattern]
    log_path = log_path or home / "dags-test" / f"{dag_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        outcome = subprocess.run(  # noqa: S603 - our own airflow
            airflow_command(*args), env=airflow_env(settings), stdout=log, stderr=subprocess.STDOUT, check=False
        )
    return outcome.returncode, log_path


def task_states(dag_id: str, *, settings: Settings | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
    """Task instances of a DAG run (default: the newest run) from the Airflow metadata database."""
    import sqlalchemy as sa

    settings = settings or get_settings()
    engine = sa.create_engine(settings.resolved_airflow_sql_alchemy_conn)
    try:
        with engine.connect() as conn:
            if run_id is None:
                run_id = conn.execute(
                    sa.text("SELECT run_id FROM dag_run WHERE dag_id = :d ORDER BY id DESC LIMIT 1"), {"d": dag_id}
                ).scalar()
            if run_id is None:
                return []
            rows = conn.execute(
                sa.text(
                    "SELECT task_id, map_index, state, try_number FROM task_instance "
                    "WHERE dag_id = :d AND run_id = :r ORDER BY task_id, map_index"
                ),
                {"d": dag_id, "r": run_id},
            ).mappings()
            return [{**row, "run_id": run_id} for row in rows]
    finally:
        engine.dispose()


@airflow_app.command("env")
def env_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the variables as JSON.")] = False,
) -> None:
    """Show the Airflow environment Shironzi uses (passwords hidden); `eval` the output to use it in a shell."""
    env = airflow_env()
    shown = {name: env[name] for name in SHOWN_VARIABLES}
    shown["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _hide_password(shown["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    for name, value in shown.items():
        typer.echo(f"export {name}={json.dumps(value)}")


@airflow_app.command("dags-test")
def dags_test_command(
    dag_id: Annotated[str, typer.Argument(help="DAG id, e.g. ingest_batch.")],
    on_date: Annotated[str | None, typer.Option("--date", help="Logical date YYYY-MM-DD (default: now).")] = None,
    conf: Annotated[str | None, typer.Option("--conf", help="DAG run params as JSON.")] = None,
) -> None:
    """Run one DAG end to end in this process tree (`airflow dags test`), then show its task states."""
    day = parse_day(on_date, option="--date")
    try:
        params = json.loads(conf) if conf else None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--conf is not valid JSON: {exc}") from exc
    with console.status(f"airflow dags test {dag_id} ..."):
        code, log = dags_test(dag_id, logical_date=day, conf=params)
    table = Table(title=f"{dag_id} (log: {log})")
    for column in ("task", "map index", "state", "tries"):
        table.add_column(column)
    for row in task_states(dag_id):
        state = str(row["state"])
        colour = "green" if state == "success" else "red" if "fail" in state else "yellow"
        table.add_row(row["task_id"], str(row["map_index"]), f"[{colour}]{state}[/{colour}]", str(row["try_number"]))
    console.print(table)
    if code != 0:
        raise OrchestrationError(f"DAG {dag_id} failed (exit {code}); see {log}")


@airflow_app.command("states")
def states_command(
    dag_id: Annotated[str, typer.Argument(help="DAG id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Task states of a DAG's newest run."""
    rows = task_states(dag_id)
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    for row in rows:
        typer.echo(f"{row['task_id']}[{row['map_index']}]: {row['state']}")


@airflow_app.command("standalone")
def standalone_command() -> None:
    """Start `airflow standalone` (api-server on :8080, scheduler, dag-processor, triggerer) with the DAGs loaded."""
    settings = get_settings()
    settings.ensure_home()
    home = ensure_airflow_db(settings)
    console.print(f"AIRFLOW_HOME={home}  DAGs: {DAGS_FOLDER}  UI: http://localhost:8080 (Ctrl-C stops)")
    try:
        subprocess.run(airflow_command("standalone"), env=airflow_env(settings), check=False)  # noqa: S603
    except KeyboardInterrupt:
        console.print("airflow standalone stopped")


@airflow_app.command("dbt-manifest")
def dbt_manifest_command() -> None:
    """Refresh `orchestration/dags/dbt_models.json` (the dbt_build DAG's per-model tasks) from dbt parse."""
    from orchestration.pipeline import write_dbt_model_graph

    path, graph = write_dbt_model_graph()
    console.print(f"{len(graph)} dbt models written to {path}")
