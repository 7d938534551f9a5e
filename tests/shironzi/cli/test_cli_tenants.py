"""`shironzi tenants|modules|keys`: the real console script for a few commands, in-process for the rest."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shironzi.tenancy import MODULES, get_registry
from tests.shironzi.cli._fixtures import CliResult

SHIRONZI = str(Path(sys.executable).parent / "shironzi")


def _script(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRONZI_")}
    env["SHIRONZI_HOME"] = str(home)
    return subprocess.run([SHIRONZI, *args], capture_output=True, text=True, env=env, timeout=120)


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.slow  # four real process starts (~2 s each with every CLI plugin loaded)
def test_console_script_creates_lists_and_refuses_bad_input(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = _script(
        [
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme Health",
            "--industry",
            "healthcare",
            "--plan",
            "enterprise",
            "--json",
        ],
        home,
    )
    assert created.returncode == 0, created.stderr
    payload = json.loads(created.stdout)
    assert payload["tenant"]["placement"] == "dedicated" and payload["api_key"].startswith("shz_")

    listed = _script(["tenants", "list", "--json"], home)
    assert listed.returncode == 0, listed.stderr
    assert [t["slug"] for t in json.loads(listed.stdout)["tenants"]] == ["acme"]

    bad_industry = _script(["tenants", "create", "other", "--name", "O", "--industry", "retail"], home)
    assert bad_industry.returncode == 1
    assert "invalid industry 'retail'" in _one_error_line(bad_industry.stderr)

    refused = _script(["modules", "disable", "acme", "analytics"], home)
    line = _one_error_line(refused.stderr)
    assert refused.returncode == 1 and "churn_prediction, trend_forecast" in line


def test_create_show_and_list(cli: Callable[..., CliResult]) -> None:
    made = cli(
        "tenants", "create", "shop-one", "--name", "Shop One", "--industry", "ecommerce", "--plan", "free"
    )
    assert made.code == 0, made.stderr
    assert "shop-one" in made.stdout and "API key (shown once" in made.stdout
    key = made.stdout.rsplit("store it now): ", 1)[1].split()[0]
    assert get_registry().verify_key(key).tenant_id == get_registry().get_tenant("shop-one").id

    shown = cli("tenants", "show", "shop-one", "--json")
    detail = json.loads(shown.stdout)
    assert detail["slug"] == "shop-one" and detail["modules"] == ["analytics", "dashboards"]
    assert len(detail["keys"]) == 1 and "key_hash" not in detail["keys"][0]
    assert "shop-one" in cli("tenants", "show", "shop-one").stdout

    cli(
        "tenants",
        "create",
        "shop-two",
        "--name",
        "Shop Two",
        "--industry",
        "education",
        "--region",
        "us-east",
    )
    listed = json.loads(cli("tenants", "list", "--region", "us-east", "--json").stdout)
    assert listed["total"] == 1 and listed["tenants"][0]["slug"] == "shop-two"
    table = cli("tenants", "list").stdout
    assert "shop-one" in table and "shop-two" in table and "2 of 2 tenant(s)" in table


def test_status_commands(cli: Callable[..., CliResult]) -> None:
    cli("tenants", "create", "status-co", "--name", "S", "--industry", "education")
    assert "now suspended" in cli("tenants", "suspend", "status-co", "--reason", "billing").stdout
    assert "now active" in cli("tenants", "resume", "status-co").stdout
    assert "now offboarding" in cli("tenants", "offboard", "status-co").stdout
    assert "now deleted" in cli("tenants", "offboard", "status-co", "--complete").stdout
    again = cli("tenants", "resume", "status-co")
    assert again.code == 1 and "error: invalid_state" in again.stderr and "deleted" in again.stderr
    duplicate = cli("tenants", "create", "status-co", "--name", "Again", "--industry", "ecommerce")
    assert duplicate.code == 1 and "duplicate_slug" in _one_error_line(duplicate.stderr)
    unknown = cli("tenants", "show", "ghost")
    assert unknown.code == 1 and "tenant_not_found" in unknown.stderr


def test_modules_commands(cli: Callable[..., CliResult]) -> None:
    catalogue = json.loads(cli("modules", "list", "--json").stdout)
    assert [m["module"] for m in catalogue] == list(MODULES)
    assert next(m for m in catalogue if m["module"] == "trend_forecast")["requires"] == ["analytics"]

    cli("tenants", "create", "mod-co", "--name", "M", "--industry", "ecommerce", "--plan", "free")
    enabled = cli("modules", "enable", "mod-co", "notifications")
    assert enabled.code == 0 and "notifications" in enabled.stdout
    toggles = {
        m["module"]: m["enabled"] for m in json.loads(cli("modules", "list", "mod-co", "--json").stdout)
    }
    assert toggles["notifications"] and not toggles["churn_prediction"]
    assert cli("modules", "disable", "mod-co", "notifications").code == 0
    assert not get_registry().is_enabled("mod-co", "notifications")
    cli("modules", "disable", "mod-co", "analytics")
    refused = cli("modules", "enable", "mod-co", "churn_prediction")
    assert refused.code == 1 and "requires analytics" in refused.stderr
    assert cli("modules", "enable", "mod-co", "warp_drive").code == 1


def test_toggling_a_module_into_the_state_it_has_is_a_no_op(cli: Callable[..., CliResult]) -> None:
    cli("tenants", "create", "noop-co", "--name", "N", "--industry", "ecommerce", "--plan", "free")
    assert cli("modules", "enable", "noop-co", "notifications").code == 0
    events = len(get_registry().events(get_registry().get_tenant("noop-co").id))
    again = cli("modules", "enable", "noop-co", "notifications")
    assert again.code == 0 and "notifications is already enabled for noop-co; nothing to do" in again.stdout
    off = cli("modules", "disable", "noop-co", "churn_prediction")
    assert off.code == 0 and "churn_prediction is not enabled for noop-co; nothing to do" in off.stdout
    assert len(get_registry().events(get_registry().get_tenant("noop-co").id)) == events  # nothing recorded


def test_modules_set_records_churn_windows(cli: Callable[..., CliResult]) -> None:
    cli("tenants", "create", "win-co", "--name", "W", "--industry", "ecommerce", "--plan", "standard")
    done = cli("modules", "set", "win-co", "churn_prediction", "inactivity_days=60", "horizon_days=45")
    assert done.code == 0 and "horizon_days=45, inactivity_days=60" in done.stdout
    assert get_registry().module_settings("win-co", "churn_prediction") == {"inactivity_days": 60, "horizon_days": 45}
    refused = cli("modules", "set", "win-co", "churn_prediction", "inactivity_days=2")
    assert refused.code == 1 and "churn_prediction.inactivity_days: Input should be greater than or equal to 7" in \
        refused.stderr and len(refused.stderr.splitlines()) == 1
    listed = cli("modules", "set", "win-co", "notifications", 'webhook_urls=["https://hooks.example.com/a"]')
    assert listed.code == 0, listed.stderr
    assert get_registry().module_settings("win-co", "notifications") == {
        "webhook_urls": ["https://hooks.example.com/a"]}
    assert cli("modules", "set", "win-co", "churn_prediction", "oops").code == 1


def test_keys_commands(cli: Callable[..., CliResult]) -> None:
    cli("tenants", "create", "key-co", "--name", "K", "--industry", "ecommerce")
    issued = json.loads(
        cli(
            "keys",
            "issue",
            "key-co",
            "--scope",
            "read",
            "--scope",
            "write",
            "--expires-in-days",
            "7",
            "--label",
            "etl",
            "--json",
        ).stdout
    )
    registry = get_registry()
    assert registry.verify_key(issued["api_key"]).scopes == ("read", "write")
    assert issued["expires_at"] and issued["label"] == "etl"

    admin = json.loads(cli("keys", "issue", "--admin", "--json").stdout)
    assert registry.verify_key(admin["api_key"]).is_admin

    listed = json.loads(cli("keys", "list", "key-co", "--json").stdout)
    assert {k["prefix"] for k in listed} >= {issued["prefix"]} and len(listed) == 2
    assert [k["prefix"] for k in json.loads(cli("keys", "list", "--admin", "--json").stdout)] == [
        admin["prefix"]
    ]

    assert "revoked key" in cli("keys", "revoke", issued["prefix"]).stdout
    assert json.loads(cli("keys", "list", "key-co", "--json").stdout)[0]["revoked_at"]
    both = cli("keys", "issue", "key-co", "--admin")
    assert both.code == 1 and "either a TENANT or --admin" in both.stderr
    bad_scope = cli("keys", "issue", "key-co", "--scope", "root")
    assert bad_scope.code == 1 and "invalid scope 'root'" in bad_scope.stderr
    assert cli("keys", "revoke", "zzzzzzzzzz").code == 1


def test_import_and_rebuild(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    source = tmp_path / "tenants.csv"
    source.write_text(
        "slug,name,industry,plan\n"
        + "".join(
            f"imp-{i:04d},Imported {i},{('ecommerce', 'healthcare', 'education')[i % 3]},standard\n"
            for i in range(1200)
        )
    )
    keys_out = tmp_path / "keys.csv"
    done = cli("tenants", "import", str(source), "--keys-out", str(keys_out))
    assert done.code == 0, done.stderr
    assert "imported 1200 tenant(s)" in done.stdout and "shz_" not in done.stdout
    assert stat.S_IMODE(keys_out.stat().st_mode) == 0o600
    keys = list(csv.DictReader(keys_out.open()))
    assert (
        len(keys) == 1200 and get_registry().verify_key(keys[0]["api_key"]).tenant_id == keys[0]["tenant_id"]
    )

    refused = cli("tenants", "import", str(source), "--keys-out", str(keys_out))
    assert refused.code == 1 and "already exists" in refused.stderr

    small = tmp_path / "small.json"
    small.write_text(json.dumps([{"slug": "json-one", "name": "J", "industry": "education"}]))
    printed = cli("tenants", "import", str(small))
    rows = list(csv.DictReader(io.StringIO(printed.stdout.split("\n", 1)[1])))
    assert rows[0]["slug"] == "json-one" and rows[0]["api_key"].startswith("shz_")

    bad = tmp_path / "bad.csv"
    bad.write_text("slug,name,industry\nok-row,A,ecommerce\nbad-row,B,retail\n")
    before = get_registry().list_tenants()[1]
    rejected = cli("tenants", "import", str(bad))
    assert (
        rejected.code == 1 and "line 3" in rejected.stderr and len(rejected.stderr.strip().splitlines()) == 1
    )
    assert get_registry().list_tenants()[1] == before == 1201

    rebuilt = cli("tenants", "rebuild")
    assert rebuilt.code == 0 and "replayed 2402 event(s) into 1201 tenant(s)" in rebuilt.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["tenants", "list", "--limit", "0"],
        ["tenants", "list", "--status", "sleeping"],
        ["tenants", "create", "Bad Slug", "--name", "X", "--industry", "ecommerce"],
        ["tenants", "create", "fine-slug", "--name", "X", "--industry", "ecommerce", "--region", "moon"],
        ["keys", "issue", "--admin", "--expires-in-days", "-1"],
        ["tenants", "create", "no-name-given"],
        ["tenants", "list", "--limit", "many"],
    ],
)
def test_bad_arguments_give_one_error_line(cli: Callable[..., CliResult], args: list[str]) -> None:
    result = cli(*args)
    assert result.code != 0
    _one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("slug", "name", "said"),
    [
        ("admin", "Admin Co", "reserved"),
        ("_platform", "Platform", "reserved"),
        ("api", "Api Co", "reserved"),
        ("nul-co", "Nul\x00Co", "control character U+0000"),
        ("esc-co", "Esc\x1b[2JCo", "control character U+001B"),
        ("line-co", "Line\nBreak", "control character U+000A"),
    ],
)
def test_reserved_slugs_and_control_characters_give_one_error_line(
    cli: Callable[..., CliResult], slug: str, name: str, said: str
) -> None:
    result = cli("tenants", "create", slug, "--name", name, "--industry", "ecommerce")
    assert result.code != 0
    assert said in _one_error_line(result.stderr)
    assert slug not in [t.slug for t in get_registry().list_tenants()[0]]


def test_tenants_channel_records_an_event_and_refuses_bad_channels(cli: Callable[..., CliResult]) -> None:
    cli("tenants", "create", "channel-co", "--name", "C", "--industry", "ecommerce")
    assert "now follows the canary channel" in cli("tenants", "channel", "channel-co", "canary").stdout
    for args, said in ((["channel-co", "beta"], "unknown channel 'beta'"),
                       (["channel-co", "pinned:churn@3"], "has no version 3"),  # checked against the model registry
                       (["ghost-co", "stable"], "tenant_not_found"),
                       (["channel-co", "canary"], "already follows the canary channel")):
        refused = cli("tenants", "channel", *args)
        assert refused.code == 1 and said in _one_error_line(refused.stderr), (args, refused.stderr)
    shown = json.loads(cli("tenants", "show", "channel-co", "--json").stdout)
    assert shown["channel"] == "canary"
    assert "now follows the stable channel" in cli("tenants", "channel", "channel-co", "stable").stdout
