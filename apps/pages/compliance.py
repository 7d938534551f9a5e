"""Compliance: Delta table history, the audit-log explorer, and erasure requests with their receipts."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import streamlit as st

from apps import data
from apps.auth import require_page, tenant_search
from apps.components import empty_state
from shironzi.audit.evidence import latest_pack

ctx = require_page("compliance", audience="compliance")
viewer = ctx.viewer
st.title("Compliance")
lake = data.lake()
# A tenant's compliance officer is held to its own tenant; an operator may look across tenants.
scope: str | None = None if viewer.is_admin else ctx.tenant_id
if scope is not None:
    st.caption(f"Scoped to tenant **{ctx.tenant.name if ctx.tenant else scope}**.")

history_tab, audit_tab, erasure_tab, evidence_tab = st.tabs(
    ["Delta table history", "Audit log", "Erasure requests", "SOC 2 evidence"])

with history_tab:
    tables = data.lake_tables(lake, scope)
    if not tables:
        empty_state("No Delta tables in the lake yet.")
    else:
        uris = dict(tables)
        names = list(uris)
        default = next((i for i, n in enumerate(names) if n.endswith("/bronze/events")), 0)
        relative = st.selectbox("Table", names, index=default, key="history_table")
        history = data.table_history(lake, uris[relative])
        if history.empty:
            st.info("This table has no commits.")
        else:
            # Pooled tables hold other tenants' rows: a tenant sees the commits, not their metrics.
            shown = history.data if viewer.is_admin else history.data.select("version", "time", "operation", "engine")
            st.dataframe(shown, hide_index=True, width="stretch")

with audit_tab:
    left, middle, right = st.columns(3)
    tenant_filter = scope
    if viewer.is_admin:
        with left:
            picked = tenant_search("Tenant", key="audit_tenant", extra=["(all tenants)"])
        tenant_filter = None if picked in (None, "(all tenants)") else picked
    actor = middle.text_input("Actor (exact)", key="audit_actor", placeholder="key:abcdefghij")
    action = right.text_input("Action (exact)", key="audit_action", placeholder="dashboard_page_view")
    today = dt.datetime.now(dt.UTC).date()
    window = st.date_input("Between", value=(today - dt.timedelta(days=30), today), key="audit_window")
    start, end = window if isinstance(window, tuple) and len(window) == 2 else (None, None)
    events = data.audit_events(tenant_id=tenant_filter, actor=actor.strip() or None, action=action.strip() or None,
                               start=start, end=end)
    if events.is_empty():
        st.info("No audit events match these filters.")
    else:
        st.caption(f"{events.height:,} events (newest first, at most 500).")
        st.dataframe(events, hide_index=True, width="stretch")

with erasure_tab:
    requests = data.erasure_requests(scope)
    if requests.is_empty():
        empty_state("No erasure requests yet.",
                    "Erase a data subject with `shironzi gdpr erase --tenant T --subject ID`.")
    else:
        columns = [c for c in ("request_id", "kind", "tenant_id", "requested_by", "requested_at", "status", "tables",
                               "rows_deleted", "completed_at") if c in requests.columns]
        st.dataframe(requests.select(columns), hide_index=True, width="stretch")
        with_receipts = requests.filter(pl.col("receipt").is_not_null())
        if not with_receipts.is_empty():
            chosen = st.selectbox("Receipt", with_receipts["request_id"].to_list(), key="receipt_request")
            receipt = with_receipts.filter(pl.col("request_id") == chosen)["receipt"][0]
            st.json(receipt, expanded=False)
            st.download_button("Download receipt (JSON)", receipt, file_name=f"{chosen}.json",
                               mime="application/json", key="receipt_download")
            st.caption(f"Re-check it: `shironzi gdpr verify {chosen}`.")

with evidence_tab:
    # A pack spans every tenant (keys, admin actions, changes): operators only.
    pack = latest_pack() if viewer.is_admin else None
    if not viewer.is_admin:
        st.info("SOC 2 evidence packs cover the whole platform: a platform operator generates and reads them.")
    elif pack is None:
        empty_state("No evidence pack yet.", "Generate one with `shironzi compliance evidence --from 2026-01-01`.")
    else:
        manifest = json.loads((pack / "manifest.json").read_text())
        facts = manifest["summary"]
        st.caption(f"Latest pack: `{pack}` · period {manifest['period']['from'][:10]} to "
                   f"{manifest['period']['to'][:10]} · generated {manifest['generated_at'][:19]}")
        tiles = st.columns(4)
        tiles[0].metric("API keys", facts["keys"], help="Every key with scopes, creator and last use.")
        tiles[1].metric("Stale keys", facts["stale_keys"], help="Unused for 90 days and older than that.")
        tiles[2].metric("Changes", facts["changes"], help="Model promotions/rollbacks, module toggles, plans.")
        tiles[3].metric("Audit chain", "intact" if facts["audit_chain_ok"] else "BROKEN")
        st.download_button("Download the report (HTML)", (pack / "report.html").read_bytes(),
                           file_name=f"soc2-evidence-{pack.name}.html", mime="text/html", key="evidence_html")
        sections = sorted(f for f in manifest["files"] if f.endswith(".json"))
        st.caption("The JSON files beside it: " + ", ".join(sections))
