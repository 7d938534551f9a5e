"""Every dashboard page through Streamlit's AppTest, as a tenant analyst and as an operator, on a real
seeded lake: no exceptions, the expected elements, module gating, page-view audit events, and a tenant
never receiving another tenant's numbers (checked on the serialized page, chart data included)."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apps.components import money
from shironzi.audit.log import read_audit_events
from shironzi.tenancy import TenantContext, get_registry
from tests.apps._fixtures import SeededLake, SeededTenant

APP = str(Path(__file__).resolve().parents[2] / "apps" / "app.py")
ANALYST_PAGES = ("overview", "retention", "churn_risk", "data_health")
OPERATOR_PAGES = ("tenants", "pipelines", "models", "releases", "platform_health")
TIMEOUT = 60


def signed_in(key: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    at.text_input(key="api_key_input").input(key)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def visit(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def rendered(at: AppTest) -> bytes:
    """Every element of the page as sent to the browser (text, tables and chart data as Arrow)."""
    return b"".join(node.proto.SerializeToString() for node in at._tree if getattr(node, "proto", None) is not None)


def charts(at: AppTest) -> list[object]:
    return [n for n in at._tree if getattr(n, "type", "") == "vega_lite_chart"]


def texts(elements: Iterable[object]) -> str:
    return " ".join(str(getattr(e, "value", "")) for e in elements)


def double(value: float) -> bytes:
    return struct.pack("<d", value)


def markers(tenant: SeededTenant) -> list[bytes]:
    """Values only this tenant's data holds."""
    return [
        tenant.id.encode(), tenant.slug.encode(), tenant.name.encode(), tenant.customers[0].encode(),
        double(tenant.revenue_base), double(tenant.revenue_base + 59), double(tenant.marker_probability),
        f"{tenant.marker_probability * 100:.1f}".encode(),
    ]


def assert_absent(page: bytes, tenant: SeededTenant, where: str) -> None:
    for marker in markers(tenant):
        assert marker not in page, f"{where}: another tenant's value {marker!r} was rendered"


def test_a_bad_key_is_refused_and_audited(seeded: SeededLake) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.text_input(key="api_key_input").input("shz_aaaaaaaaaa_" + "x" * 32)
    at.button[0].click().run()
    assert not at.exception
    assert "Sign-in refused" in texts(at.error)
    assert not at.metric and not at.dataframe  # still on the sign-in page
    denied = read_audit_events(filters=[("action", "=", "dashboard_sign_in"), ("outcome", "=", "denied")])
    assert "key:aaaaaaaaaa" in denied.column("actor").to_pylist()


@pytest.mark.parametrize("page", ANALYST_PAGES)
def test_tenant_pages_render_and_never_show_another_tenant(seeded: SeededLake, page: str) -> None:
    alpha, bravo = seeded.alpha, seeded.bravo
    at = visit(signed_in(alpha.key), page)
    body = rendered(at)
    assert_absent(body, bravo, f"{page} as {alpha.slug}")
    assert_absent(body, seeded.gamma, f"{page} as {alpha.slug}")
    assert alpha.name in texts(at.title)
    if page == "overview":
        labels = [m.label for m in at.metric]
        assert labels == ["Daily active customers", "Revenue", "New customers", "Churn rate", "Orders"]
        # Default period: the last 28 of 60 seeded days -> revenue = sum(base + i for i in 32..59).
        assert at.metric[1].value == money(sum(alpha.revenue_base + i for i in range(32, 60)))
        assert at.metric[1].delta is not None and at.metric[1].delta.startswith("+")
        assert len(at.date_input) == 1 and charts(at)
        assert double(alpha.revenue_base + 59) not in body  # default KPI chart is active customers
        at.radio(key="overview_kpi").set_value("revenue").run()
        assert not at.exception and double(alpha.revenue_base + 59) in rendered(at)
        assert_absent(rendered(at), bravo, "overview revenue chart")
    elif page == "retention":
        assert charts(at) and at.dataframe
        assert double(0.9) in rendered(at) or b"90" in body
    elif page == "churn_risk":
        table = at.dataframe[0].value
        assert alpha.customers[0] in set(table.iloc[:, 0])
        assert {"high", "medium"} >= set(table["Band"])  # default filter
        # 8 seeded, the last (0.72) erased by the seeded GDPR request: 0.8123 and 0.65 are high
        assert [m.value for m in at.metric][:2] == ["7", "2"]
        assert len(at.get("download_button")) == 1
        at.multiselect(key="churn_bands").set_value(["low"]).run()
        assert set(at.dataframe[0].value["Band"]) == {"low"}
    elif page == "data_health":
        sources = at.dataframe[0].value
        assert set(sources["Source"]) == {"kafka:events", "file:landing"}
        features = at.dataframe[1].value
        assert list(features["Feature view"]) == ["customer_activity_v1"] and list(features["Rows"]) == [7]
        assert str(features["Newest snapshot"][0])[:10] == "2026-03-30"  # alpha's, not bravo's 2026-03-22
        assert len(at.dataframe) == 4 and len(charts(at)) == 2  # sources, features, runs, anomalies
        assert double(4242) not in body and b"4242" not in body
        assert b"late_event" not in body and b"schema_violation" in body


def test_the_other_tenant_sees_its_own_numbers_and_words(seeded: SeededLake) -> None:
    alpha, bravo = seeded.alpha, seeded.bravo
    at = visit(signed_in(bravo.key), "overview")
    labels = [m.label for m in at.metric]
    assert labels[0] == "Daily active patients" and labels[-1] == "Appointments"
    assert at.metric[1].label == "Billed revenue"
    assert at.metric[1].value == money(sum(bravo.revenue_base + i for i in range(32, 60)))
    assert_absent(rendered(at), alpha, "overview as bravo")
    visit(at, "churn_risk")
    assert bravo.customers[0] in set(at.dataframe[0].value.iloc[:, 0])
    assert_absent(rendered(at), alpha, "churn as bravo")
    visit(at, "data_health")
    assert b"late_event" in rendered(at)
    # bravo's plan has no audit_access and it is no operator: asking for those pages never shows them.
    for page in ("compliance", *OPERATOR_PAGES):
        try:
            at.switch_page(f"pages/{page}.py")
        except ValueError:
            continue  # not even registered for this viewer
        at.run()
        assert not at.exception
        assert texts(at.title) not in ("Compliance", "Tenants", "Pipelines", "Models"), page
        assert not at.dataframe or bravo.id.encode() in rendered(at), page


def test_data_health_shows_only_the_tenants_own_anomalies(seeded: SeededLake) -> None:
    for me, kind, other_kind, expected, other_expected in (
        (seeded.alpha, "volume spike", "silent", 3131.0, 9191.0),
        (seeded.bravo, "silent", "volume spike", 9191.0, 3131.0),
    ):
        at = visit(signed_in(me.key), "data_health")
        anomalies = at.dataframe[-1].value
        assert list(anomalies["Kind"]) == [kind] and list(anomalies["Expected"]) == [expected]
        body = rendered(at)
        assert other_kind.encode() not in body and str(int(other_expected)).encode() not in body


def test_modules_gate_pages_and_denials_are_audited(seeded: SeededLake) -> None:
    gamma = seeded.gamma  # free plan: analytics + dashboards only
    at = visit(signed_in(gamma.key), "churn_risk")
    assert "churn_prediction" in texts(at.warning) and not at.dataframe and not charts(at)
    denied = read_audit_events(
        filters=[("action", "=", "dashboard_page_view"), ("tenant_id", "=", gamma.id), ("outcome", "=", "denied")]
    )
    assert "dashboard:churn_risk" in denied.column("resource").to_pylist()
    visit(at, "overview")
    assert [m.label for m in at.metric][-1] == "Lessons" and not at.warning


def test_csv_export_needs_data_export(seeded: SeededLake) -> None:
    bravo = seeded.bravo
    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="module toggle")
    at = visit(signed_in(bravo.key), "churn_risk")
    button = at.get("download_button")[0]
    assert button.proto.label == "Download CSV"
    registry.disable_module(admin, bravo.id, "data_export")
    try:
        visit(at, "overview")
        visit(at, "churn_risk")
        assert not at.get("download_button")
        assert "data_export" in texts(at.caption)
    finally:
        registry.enable_module(admin, bravo.id, "data_export")


def test_every_page_view_is_an_audit_event(seeded: SeededLake) -> None:
    alpha = seeded.alpha
    at = signed_in(alpha.key)
    for page in (*ANALYST_PAGES, "compliance"):
        visit(at, page)
    prefix = alpha.key.split("_")[1]
    rows = read_audit_events(
        filters=[("action", "=", "dashboard_page_view"), ("actor", "=", f"key:{prefix}")]
    ).to_pylist()
    assert {r["resource"] for r in rows} >= {f"dashboard:{p}" for p in (*ANALYST_PAGES, "compliance")}
    assert {r["tenant_id"] for r in rows} == {alpha.id}
    assert all(r["purpose"] == "dashboard" and r["actor_kind"] == "key" for r in rows)


def test_tenant_compliance_page_is_scoped(seeded: SeededLake) -> None:
    alpha, bravo = seeded.alpha, seeded.bravo  # alpha's enterprise plan includes audit_access
    at = visit(signed_in(alpha.key), "compliance")
    assert len(at.tabs) == 4
    assert "operator" in texts(at.info)  # the SOC 2 pack spans tenants: not shown to a tenant
    events = at.dataframe[1].value
    assert set(events["tenant_id"]) == {alpha.id}
    assert bravo.id.encode() not in rendered(at)
    erasures = at.dataframe[2].value
    assert list(erasures["request_id"]) == [seeded.receipt_request_id]
    assert erasures["status"][0] == "erased and verified"
    tables = at.selectbox(key="history_table").options
    assert tables and not any(t.startswith("_platform") for t in tables)
    assert list(at.dataframe[0].value.columns) == ["version", "time", "operation", "engine"]


def test_operator_compliance_page_offers_the_latest_evidence_pack(seeded: SeededLake, tmp_path: Path) -> None:
    from shironzi.audit.evidence import default_pack_dir, write_evidence_pack

    operator = TenantContext.admin(actor="dashboard-tests", purpose="evidence pack")
    pack = write_evidence_pack(operator, default_pack_dir())
    at = visit(signed_in(seeded.admin_key), "compliance")
    assert {m.label: m.value for m in at.metric}["Audit chain"] == "intact"
    assert str(pack.directory) in texts(at.caption)
    assert any(b.proto.label == "Download the report (HTML)" for b in at.get("download_button"))


def test_operator_sees_every_page(seeded: SeededLake) -> None:
    alpha, bravo = seeded.alpha, seeded.bravo
    at = signed_in(seeded.admin_key)
    for page in (*ANALYST_PAGES, *OPERATOR_PAGES, "compliance"):
        visit(at, page)
        assert at.title, page
        if page == "tenants":
            assert at.metric[0].value == "3"
            assert len(charts(at)) == 5
            usage = at.dataframe[0].value
            assert usage["slug"].iloc[0] == bravo.slug  # the biggest tenant first
        elif page == "pipelines":
            assert [m.value for m in at.metric][:2] == ["3", "1"]
            assert "fct_tenant_daily_kpis" in set(at.dataframe[1].value["node"])
            versions = at.dataframe[3].value
            assert set(versions["version"]) == {"1", "2"}
            assert versions.loc[versions["version"] == "2", "aliases"].item() == "champion"
            assert "model_promotion" in set(at.dataframe[4].value["action"])
        elif page == "models":
            assert "version **2**" in texts(at.caption)
            assert len(charts(at)) == 3  # metrics over versions, PSI, AUC by tenant size
            body = rendered(at)
            assert double(0.78) in body and double(0.73) in body and double(0.31) in body
            assert double(5000.0) not in body  # row counts are not plotted with the scores by default
            assert set(next(m for m in at.multiselect if m.key == "model_metrics").value) == {"auc", "pr_auc"}
        elif page == "compliance":
            erasures = at.dataframe[2].value
            assert seeded.receipt_request_id in set(erasures["request_id"])
            assert at.get("json")
    # The operator's analyst pages follow the tenant picker.
    at = signed_in(seeded.admin_key)
    picker = next(s for s in at.get("selectbox") if s.key == "tenant_picker")
    picker.set_value(bravo.id).run()
    visit(at, "overview")
    assert at.metric[1].label == "Billed revenue" and bravo.name in texts(at.title)
    rows = read_audit_events(filters=[("action", "=", "dashboard_page_view"), ("is_admin", "=", True)]).to_pylist()
    assert {"dashboard:tenants", "dashboard:models", "dashboard:pipelines"} <= {r["resource"] for r in rows}
    assert any(r["tenant_id"] == bravo.id and r["resource"] == "dashboard:overview" for r in rows)
    assert alpha.id in {r["tenant_id"] for r in rows}


def test_empty_lake_pages_explain_themselves(home: Path) -> None:
    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="empty lake")
    _, key = registry.provision_tenant(admin, slug="empty-co", name="Empty Co", industry="education", plan="enterprise")
    _, admin_key = registry.issue_key(admin, None, scopes=["admin"])
    stages: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = stages.append  # type: ignore[method-assign]
    logging.getLogger("shironzi.stage").addHandler(handler)
    try:
        at = signed_in(key)
        for page in (*ANALYST_PAGES, "compliance"):
            visit(at, page)
            shown = texts(at.info) + texts(at.success)
            assert "shironzi" in shown, (page, shown)
    finally:
        logging.getLogger("shironzi.stage").removeHandler(handler)
    # Each lake read logs one stage summary line (a new lake: every read is a cache miss).
    logged = {getattr(r, "fields", {}).get("stage") for r in stages}
    assert {"dashboard.daily_kpis", "dashboard.cohort_retention", "dashboard.source_freshness"} <= logged
    at = signed_in(admin_key)
    for page in OPERATOR_PAGES:
        visit(at, page)
        assert "shironzi" in texts(at.info), page


def test_a_revoked_key_is_signed_out_on_the_next_interaction(seeded: SeededLake) -> None:
    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="revocation")
    record, key = registry.issue_key(admin, seeded.alpha.id, scopes=["read"], label="revoked in a test")
    at = visit(signed_in(key), "overview")
    assert at.metric
    registry.revoke_key(admin, record.prefix)
    at.run()
    assert not at.exception and not at.metric
    assert "signed out" in texts(at.warning) and "revoked" in texts(at.warning)
    at.switch_page("pages/overview.py").run()  # asking for the page again shows no data
    assert not at.exception and not at.metric and not at.dataframe


@pytest.mark.parametrize("scopes", [["write"], ["admin"], ["write", "admin"]])
def test_a_tenant_key_without_the_read_scope_is_refused(seeded: SeededLake, scopes: list[str]) -> None:
    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="scopes")
    record, key = registry.issue_key(admin, seeded.alpha.id, scopes=scopes, label="no read scope")
    at = signed_in(key)
    refused = texts(at.error)
    assert "Sign-in refused" in refused and "'read' scope" in refused, refused
    assert not at.metric and not at.dataframe  # still on the sign-in page
    with pytest.raises(ValueError, match="Known pages: \\['Sign in'\\]"):
        at.switch_page("pages/overview.py")  # no analytics page is even registered for this session
    denied = read_audit_events(
        filters=[("action", "=", "dashboard_sign_in"), ("actor", "=", f"key:{record.prefix}")]
    ).to_pylist()
    assert [json.loads(r["details"])["reason"] for r in denied] == ["scope_denied"]


def test_operator_tenant_picker_searches_a_crowded_registry(home: Path) -> None:
    """With 5,000 tenants the picker lists at most the search limit, finds a tenant by slug prefix, and the
    analyst pages render for the one picked."""
    from shironzi.tenancy.store import TENANT_SEARCH_LIMIT

    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="crowded registry")
    registry.provision_many(admin, [
        registry.validate_spec(slug=f"{('acme', 'zenith')[n % 2]}-{n:05d}", name=f"Crowd {n}", industry="ecommerce")
        for n in range(5_000)
    ])
    _, admin_key = registry.issue_key(admin, None, scopes=["admin"])
    at = signed_in(admin_key)
    picker = next(s for s in at.get("selectbox") if s.key == "tenant_picker")
    assert len(picker.options) == TENANT_SEARCH_LIMIT
    at.text_input(key="tenant_picker_query").input("zenith-0424").run()
    assert not at.exception, at.exception
    picker = next(s for s in at.get("selectbox") if s.key == "tenant_picker")
    wanted = registry.get_tenant("zenith-04241")
    slugs = [label.split(" · ")[0] for label in picker.options]
    # the matches, and the tenant picked before (acme-00000, the first slug) so the page keeps its scope
    assert slugs == ["acme-00000", *(f"zenith-0424{d}" for d in (1, 3, 5, 7, 9))]
    picker.set_value(wanted.id).run()
    visit(at, "overview")
    assert wanted.name in texts(at.title)


def test_tenants_page_shows_cost_and_margin_filtered_on_the_server(seeded: SeededLake) -> None:
    import datetime as dt

    import polars as pl

    from shironzi.lake import overwrite
    from shironzi.metering.usage import USAGE_COLUMNS, usage_schema, usage_uri

    today = dt.datetime.now(dt.UTC).date()
    rows = [{"tenant_id": t.id, "day": today.replace(day=1), "events_landed": n, "bytes_total": 0, "api_requests": 0,
             "compute_seconds": 0.0} for t, n in ((seeded.alpha, 2_000_000), (seeded.bravo, 1_000_000))]
    frame = pl.DataFrame(rows).with_columns(*(pl.lit(0).alias(c) for c in USAGE_COLUMNS if c not in rows[0]))
    frame = frame.with_columns(pl.lit(dt.datetime.now(dt.UTC)).alias("collected_at")).cast(usage_schema())
    overwrite(usage_uri(), frame.select(USAGE_COLUMNS).to_arrow(), partition_by="day")
    from apps import data

    data.tenant_costs.clear()  # an earlier visit cached the month before it was metered

    at = visit(signed_in(seeded.admin_key), "tenants")
    costs = at.dataframe[-1].value
    assert "cost" in costs.columns and "margin" in costs.columns
    prices = get_settings_costs()
    by_slug = costs.set_index("slug")
    alpha = 2.0 * prices["enterprise"].per_million_events
    assert by_slug.loc[seeded.alpha.slug, "cost"] == round(alpha, 2)
    assert by_slug.loc[seeded.alpha.slug, "margin"] == round(prices["enterprise"].plan_price - alpha, 2)
    assert len(costs) == 3  # gamma has no usage: a cost of 0, still listed
    at.selectbox(key="cost_plan").set_value("standard").run()
    assert not at.exception
    filtered = at.dataframe[-1].value
    assert list(filtered["slug"]) == [seeded.bravo.slug]
    assert {m.label: m.value for m in at.metric}["Tenants matched"] == "1"


def get_settings_costs():  # type: ignore[no-untyped-def]
    from shironzi.settings import get_settings

    return get_settings().plan_costs


def test_releases_page_shows_each_rollouts_waves_and_figures(home: Path) -> None:
    from datetime import UTC, datetime

    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="releases page")
    tenant, _ = registry.provision_tenant(admin, slug="canary-co", name="Canary Co", industry="ecommerce",
                                          plan="enterprise")
    registry.set_channel(admin, tenant.id, "canary", check_pin=None)
    _, admin_key = registry.issue_key(admin, None, scopes=["admin"])
    now = datetime.now(UTC)
    analysis = {"tenants": 1, "rows": 412, "figures": {"psi": 1.8731, "brier_baseline": 0.1, "brier_candidate": 0.25},
                "failures": ["prediction PSI 1.8731 > 0.2"]}
    waves = [{"name": "canary", "kind": "canary", "percent": None, "state": "failed", "analysis": analysis},
             {"name": "100%", "kind": "percent", "percent": 100, "state": "pending", "analysis": None}]
    registry.create_rollout(admin, {"id": "ro_00000000000000000000dead", "model": "shironzi-churn", "candidate": "7",
                                    "baseline": "6", "status": "running", "waves": waves, "created_at": now,
                                    "updated_at": now, "created_by": "test", "reason": None})
    at = visit(signed_in(admin_key), "releases")
    assert at.metric[0].value == "1"  # one tenant off stable
    assert "ro_00000000000000000000dead" in set(at.dataframe[0].value["rollout"])
    table = at.dataframe[1].value
    assert list(table["wave"]) == ["canary", "100%"] and list(table["state"]) == ["failed", "pending"]
    assert table["psi"].iloc[0] == pytest.approx(1.8731) and table["rows"].iloc[0] == 412
    assert table["brier_delta"].iloc[0] == pytest.approx(0.15)
    assert "PSI 1.8731" in table["failures"].iloc[0]
    assert len(charts(at)) == 1
