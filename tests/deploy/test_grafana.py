"""deploy/grafana: the four dashboards are valid, provisioned in docker-compose.yml against the provisioned
Prometheus datasource, and every PromQL expression parses and names only metrics the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from monitoring.metrics import exported_metric_names
from tests.deploy._fixtures import COMPOSE, ROOT

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression; raises ValueError when it does not parse as PromQL (unbalanced
    brackets or strings, a selector without a metric, an empty expression)."""
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                raise ValueError(f"unbalanced {char!r} in {expr!r}")
    if any(depth.values()) or expr.count('"') % 2:
        raise ValueError(f"unbalanced brackets or quotes in {expr!r}")
    text = re.sub(r'"[^"]*"', "", expr)
    if re.search(r"(^|[\s(,])\{", text):
        raise ValueError(f"a selector without a metric name in {expr!r}")
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][-+]?\d+)?", "", text)  # numbers, 1e-9 included
    names = set()
    for match in _IDENT.finditer(text):
        following = text[match.end():].lstrip()[:1]
        name = match.group()
        if following == "(" or name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    if not names:
        raise ValueError(f"no metric in {expr!r}")
    return names


def _expressions(board: dict) -> list[str]:
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", []) if t.get("expr")]


def test_the_parser_finds_metrics_and_refuses_broken_expressions() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(shironzi_api_request_duration_seconds_bucket'
        '{status=~"5.."}[5m]))) / clamp_min(up, 1e-9)'
    ) == {"shironzi_api_request_duration_seconds_bucket", "up"}
    for broken in ("sum(rate(x[5m])", '{job="a"}', "rate()", 'x{a="b}'):
        with pytest.raises(ValueError):
            promql_metric_names(broken)


def test_there_are_four_dashboards_with_unique_uids() -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in DASHBOARDS}
    assert set(boards) == {"platform-overview", "ingestion", "pipelines", "api"}
    assert len({b["uid"] for b in boards.values()}) == 4
    for name, board in boards.items():
        assert board["panels"] and all(p.get("targets") for p in board["panels"]), name


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_expression_names_only_exported_metrics(path: Path) -> None:
    exported = exported_metric_names()
    board = json.loads(path.read_text())
    unknown = {}
    for expr in _expressions(board):
        missing = promql_metric_names(expr) - exported
        if missing:
            unknown[expr] = sorted(missing)
    assert not unknown, f"{path.name} queries metrics the code does not export: {unknown}"


def test_no_dashboard_groups_or_filters_by_tenant() -> None:
    for path in DASHBOARDS:
        assert "tenant_id" not in json.dumps(_expressions(json.loads(path.read_text()))), path.name


def test_compose_provisions_grafana_with_prometheus_and_the_dashboards() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"] if v.startswith("./")}
    assert mounts["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "shironzi.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], (path.name, panel["title"])
    host = source["url"].split("//")[1].split(":")[0]
    assert host in services and services[host]["image"].startswith("prom/prometheus:")
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {target.split(":")[0] for job in prometheus["scrape_configs"] for config in job["static_configs"]
               for target in config["targets"]}
    assert targets == {"api", "monitor"} and targets <= set(services)
    assert services["monitor"]["command"][:3] == ["shironzi", "monitor", "serve"]
