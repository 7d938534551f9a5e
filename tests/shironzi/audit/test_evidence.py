"""The SOC 2 evidence pack over a real registry, lake, audit log and MLflow registry: a stale key is flagged
(a used or fresh one is not), a model promotion and rollback, a module toggle, a plan change and an erasure
receipt are in it, the audit chain verifies, and the HTML report renders self-contained."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from shironzi.audit.erasure import erase_subject
from shironzi.audit.events import AuditEvent
from shironzi.audit.evidence import latest_pack, write_evidence_pack
from shironzi.audit.log import get_audit_log, read_audit_events
from shironzi.lake import append, table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry

ADMIN = TenantContext.admin(actor="test:auditor", purpose="soc2 tests")
CHURN = "shironzi-churn"


class _Tags(HTMLParser):
    """Tags and the external references (src/href to another origin) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.external += [v for k, v in attrs if k in ("src", "href") and v and "://" in v]


def _promote_and_roll_back() -> None:
    """Two real MLflow versions: v2 (higher AUC logged by its run) is promoted over v1, then rolled back."""
    from mlflow import MlflowClient

    from models.promotion import HoldoutScores, promote_if_better, rollback

    settings = get_settings()
    uri = settings.resolved_mlflow_tracking_uri  # the registry too: an earlier test may have set another one
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(CHURN, artifact_location=str(settings.home / "mlartifacts"))
    client.create_registered_model(CHURN)
    for auc in (0.70, 0.80):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "auc", auc)
        client.set_terminated(run.info.run_id)
        client.create_model_version(CHURN, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(CHURN, "champion", "1")
    client.set_registered_model_alias(CHURN, "challenger", "2")

    def logged_auc(version: str, holdout_run_id: str, *, settings: Any = None) -> HoldoutScores:
        run_id = client.get_model_version(CHURN, version).run_id
        return HoldoutScores(client.get_run(run_id).data.metrics["auc"], {}, True, "auc")

    assert promote_if_better(CHURN, evaluators={CHURN: logged_auc}, margin=0.0).promoted
    rollback(CHURN)


@pytest.fixture
def audited_world(audit_home: Path) -> dict[str, Any]:
    registry = get_registry()
    tenant, _ = registry.provision_tenant(ADMIN, slug="clinic", name="Clinic", industry="healthcare", plan="standard")
    old_unused, _ = registry.issue_key(ADMIN, tenant.id, scopes=["read"], label="old integration")
    old_used, _ = registry.issue_key(ADMIN, tenant.id, scopes=["read"], label="old but in use")
    fresh, _ = registry.issue_key(ADMIN, tenant.id, scopes=["read"], label="fresh")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=200)
    with registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET created_at = :at WHERE prefix IN (:a, :b)"),
                     {"at": long_ago.replace(tzinfo=None), "a": old_unused.prefix, "b": old_used.prefix})
    get_audit_log().record(AuditEvent(action="api_read", actor=f"key:{old_used.prefix}", actor_kind="key",
                                      tenant_id=tenant.id, resource="/v1/tenant"))
    registry.disable_module(ADMIN, tenant.id, "trend_forecast")
    registry.change_plan(ADMIN, tenant.id, "enterprise")
    rows = pa.table({"tenant_id": [tenant.id, tenant.id], "customer_id": ["patient-1", "patient-2"],
                     "event_date": [dt.date(2026, 1, 1)] * 2})
    append(table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region=tenant.region), rows)
    receipt = erase_subject(ADMIN, tenant.id, "patient-1")
    _promote_and_roll_back()
    return {"tenant": tenant.id, "stale": old_unused.prefix, "used": old_used.prefix, "fresh": fresh.prefix,
            "receipt": receipt.request_id}


def test_the_pack_holds_the_evidence_and_renders(audited_world: dict[str, Any], tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    pack = write_evidence_pack(ADMIN, tmp_path / "pack", start=now - dt.timedelta(days=1),
                               end=now + dt.timedelta(hours=1))
    read = {p.stem: json.loads(p.read_text()) for p in pack.directory.glob("*.json")}

    assert read["access_review"]["stale"] == [audited_world["stale"]]
    by_prefix = {k["prefix"]: k for k in read["access_review"]["keys"]}
    assert by_prefix[audited_world["used"]]["last_used"] is not None
    assert by_prefix[audited_world["stale"]]["created_by"] == ADMIN.actor
    assert {e["action"] for e in read["changes"]["models"]} == {"model_promotion", "model_rollback"}
    toggles = [(e["action"], e["tenant_id"], e["details"]["module"]) for e in read["changes"]["modules"]]
    assert toggles[0] == ("module_disabled", audited_world["tenant"], "trend_forecast")
    assert ("module_enabled", audited_world["tenant"], "trend_forecast") in toggles  # the plan change turned it on
    plans = [(e["details"]["from"], e["details"]["to"]) for e in read["changes"]["plans"]]
    assert plans == [("standard", "enterprise")]
    assert read["changes"]["deployed"]["contracts"]["healthcare"] and read["changes"]["deployed"]["dags"]
    (erasure,) = read["erasures"]
    assert erasure["request_id"] == audited_world["receipt"] and erasure["signature_valid"] and erasure["verified"]
    assert erasure["rows_deleted"] == 1
    assert read["audit_chain"]["ok"] is True and read["audit_chain"]["events"] > 0
    assert read["backup_drills"]["note"] == "none recorded"
    assert any(a["action"] == "tenant_provisioned" for a in read["admin_actions"])
    tables = {t["table"]: t for t in read["encryption"]}
    assert any(name.endswith("/bronze/events") for name in tables)
    assert any("encrypted" in t["protection"] for t in tables.values()) or "_platform/vault/pii" not in tables

    html = pack.report.read_text()
    parser = _Tags()
    parser.feed(html)
    assert {"table", "h2", "style"} <= set(parser.tags) and parser.external == [] and "<script" not in html
    for shown in (audited_world["stale"], "STALE", "model_promotion", "module_disabled", audited_world["receipt"],
                  "none recorded", "intact"):
        assert shown in html, shown
    files = read["manifest"]["files"]
    assert files["report.html"] == hashlib.sha256(html.encode()).hexdigest()
    review = (pack.directory / "access_review.json").read_bytes()
    assert files["access_review.json"] == hashlib.sha256(review).hexdigest()
    generated = read_audit_events(filters=[("action", "=", "evidence_pack_generated")])
    assert generated.num_rows == 1
    assert latest_pack(tmp_path) == pack.directory


def test_the_cli_writes_a_pack_and_refuses_a_used_directory(
    audit_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shironzi.cli import main

    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    out = tmp_path / "cli-pack"
    main.run(["compliance", "evidence", "--from", "2026-01-01", "--out", str(out)])
    assert "evidence pack written" in capsys.readouterr().out
    assert (out / "report.html").exists() and (out / "manifest.json").exists()
    before = sorted(p.name for p in out.iterdir())
    for args in (["--out", str(out)], ["--from", "2026-02-01", "--to", "2026-01-01", "--out", str(tmp_path / "x")]):
        with pytest.raises(SystemExit) as exit_info:
            main.run(["compliance", "evidence", *args])
        assert exit_info.value.code == 1
        assert capsys.readouterr().err.strip().startswith("error: invalid_input")
    assert sorted(p.name for p in out.iterdir()) == before and not (tmp_path / "x").exists()
