"""`shironzi simulate`: options, registry tenants by default, summary and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from ingestion.synthetic.cli import simulate
from shironzi.errors import InvalidInputError, TenantNotFoundError

ROOT = Path(__file__).resolve().parents[3]


def app() -> typer.Typer:
    cli = typer.Typer()
    cli.command()(simulate)
    cli.command("noop")(lambda: None)  # keep `simulate` a named sub-command
    return cli


def invoke(*args: str) -> object:
    return CliRunner().invoke(app(), ["simulate", *args], catch_exceptions=True)


def test_simulate_writes_landing_files_ground_truth_and_a_summary(home: Path) -> None:
    result = invoke(
        "--tenants",
        "shop:ecommerce,clinic:healthcare",
        "--days",
        "14",
        "--customers",
        "200",
        "--start",
        "2024-02-01",
        "--format",
        "parquet",
        "--bad-share",
        "0.02",
        "--seed",
        "9",
    )
    assert result.exit_code == 0, result.output
    files = sorted((home / "landing").rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"shop", "clinic"}
    assert sum(pl.read_parquet(f).height for f in files) > 0
    assert "bad: unknown_tenant" in result.output and "records written" in result.output
    manifest = json.loads((home / "ground_truth" / "landing-manifest-s9-parquet.json").read_text())
    assert "malformed_json" not in manifest["bad_by_kind"]  # not applicable to parquet
    assert (home / "ground_truth" / "churn_snapshots.parquet").exists()


@pytest.mark.slow
def test_simulate_defaults_to_active_registry_tenants(home: Path) -> None:
    from shironzi.tenancy import TenantContext, get_registry, reset_registries

    reset_registries()
    ctx = TenantContext.admin(actor="test", purpose="simulate")
    kept, _ = get_registry().provision_tenant(ctx, slug="kept-shop", name="Kept", industry="education")
    paused, _ = get_registry().provision_tenant(ctx, slug="paused-shop", name="Paused", industry="ecommerce")
    get_registry().suspend(ctx, paused.id)
    try:
        result = invoke("--days", "5", "--customers", "50", "--out", str(home / "in"), "--file-per", "day")
        assert result.exit_code == 0, result.output
        events = pl.concat([pl.read_ndjson(f) for f in (home / "in").glob("*.jsonl")], how="diagonal_relaxed")
        assert set(events.get_column("tenant_id")) == {kept.id}
    finally:
        reset_registries()


def test_simulate_refuses_bad_options(home: Path) -> None:
    result = invoke(
        "--tenants", "a:ecommerce", "--format", "csv", "--bad-kinds", "malformed_json", "--bad-share", "0.1"
    )
    assert isinstance(result.exception, InvalidInputError)
    result = invoke("--tenants", "a:ecommerce", "--format", "xml")
    assert isinstance(result.exception, InvalidInputError)
    result = invoke("--tenants", "no-such-tenant", "--days", "2")
    assert isinstance(result.exception, TenantNotFoundError)
    assert not (home / "landing").exists()


@pytest.mark.slow
def test_shironzi_simulate_is_wired_as_a_top_level_command(home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIRONZI_HOME": str(home)}
    shironzi = Path(sys.executable).parent / "shironzi"
    if not shironzi.exists():
        pytest.skip("the shironzi console script is not installed")
    done = subprocess.run(
        [
            str(shironzi),
            "simulate",
            "--tenants",
            "s:ecommerce",
            "--days",
            "3",
            "--customers",
            "20",
            "--format",
            "csv",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert list((home / "landing" / "s").glob("*.csv"))
    bad = subprocess.run(
        [str(shironzi), "simulate", "--tenants", "s:ecommerce", "--start", "someday"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "error: invalid_input: --start must be YYYY-MM-DD" in bad.stderr
