"""The Shironzi dashboards: `shironzi serve dashboard` (or `streamlit run apps/app.py`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import auth
from apps.theme import register_theme
from shironzi.observability import configure_logging
from shironzi.settings import get_settings

HERE = Path(__file__).resolve().parent

ANALYST_PAGES = (
    ("pages/overview.py", "Overview", ":material/monitoring:"),
    ("pages/retention.py", "Retention", ":material/grid_on:"),
    ("pages/churn_risk.py", "Churn risk", ":material/person_remove:"),
    ("pages/data_health.py", "Data health", ":material/health_and_safety:"),
)
OPERATOR_PAGES = (
    ("pages/tenants.py", "Tenants", ":material/apartment:"),
    ("pages/pipelines.py", "Pipelines", ":material/account_tree:"),
    ("pages/models.py", "Models", ":material/model_training:"),
    ("pages/releases.py", "Releases", ":material/rocket_launch:"),
    ("pages/platform_health.py", "Platform health", ":material/monitor_heart:"),
)
COMPLIANCE_PAGES = (("pages/compliance.py", "Compliance", ":material/policy:"),)


def _pages(specs: tuple[tuple[str, str, str], ...]) -> list[st.Page]:
    return [st.Page(str(HERE / path), title=title, icon=icon) for path, title, icon in specs]


def main() -> None:
    st.set_page_config(page_title="Shironzi", page_icon=":material/water:", layout="wide")
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    viewer = auth.current_viewer()
    if viewer is None:
        st.navigation([st.Page(auth.sign_in_page, title="Sign in", url_path="sign-in")]).run()
        return
    register_theme()
    sections: dict[str, list[st.Page]] = {"Analytics": _pages(ANALYST_PAGES)}
    if viewer.is_admin:
        sections["Operations"] = _pages(OPERATOR_PAGES)
    tenant = auth.active_tenant(viewer)
    if viewer.is_admin or (tenant is not None and auth.registry().is_enabled(tenant.id, "audit_access")):
        sections["Compliance"] = _pages(COMPLIANCE_PAGES)
    st.navigation(sections).run()


main()
