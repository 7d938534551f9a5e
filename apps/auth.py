"""Sign-in, the viewer's tenant scope, module gating and the page-view audit trail.

A tenant key signs an analyst in to exactly its tenant; a platform admin key signs an operator in, who
picks a tenant in the sidebar. The key is re-verified on every run (through the registry's short key
cache), so a revoked key or a suspended tenant loses the dashboards within the key-cache TTL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import streamlit as st

from apps.theme import Vocabulary, vocabulary
from shironzi.audit.disclosures import record_disclosure
from shironzi.audit.events import AuditEvent
from shironzi.audit.log import audit, get_audit_log
from shironzi.errors import ScopeDeniedError, ShironziError, TenantNotFoundError
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keys import KeyPrincipal
from shironzi.tenancy.records import Tenant
from shironzi.tenancy.registry import Registry, get_registry
from shironzi.tenancy.store import TENANT_SEARCH_LIMIT

Audience = Literal["analyst", "operator", "compliance"]
PAGE_VIEW_ACTION = "dashboard_page_view"
PURPOSE = "dashboard"
_KEY = "shironzi_key"
_TENANT = "shironzi_tenant"
_LAST_VIEW = "shironzi_last_view"
_LAST_SHOWN = "shironzi_last_subjects_shown"
READ_SCOPE = "read"


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: a tenant analyst (tenant_id set) or a platform operator (is_admin)."""

    key_prefix: str
    tenant_id: str | None
    is_admin: bool
    scopes: tuple[str, ...] = field(default=())

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"

    def context(self, tenant_id: str | None) -> TenantContext:
        if self.is_admin:
            return TenantContext.admin(actor=self.actor, purpose=PURPOSE)
        assert self.tenant_id is not None
        return TenantContext.for_tenant(self.tenant_id, actor=self.actor, purpose=PURPOSE)


@dataclass(frozen=True)
class PageContext:
    """What a page may show: the viewer, the tenant in scope (None: platform-wide) and its words."""

    viewer: Viewer
    tenant: Tenant | None
    page: str

    @property
    def tenant_id(self) -> str | None:
        return self.tenant.id if self.tenant else None

    @property
    def words(self) -> Vocabulary:
        return vocabulary(self.tenant.industry if self.tenant else None)


def registry() -> Registry:
    return get_registry()


def _record_failed_sign_in(prefix: str, error: ShironziError) -> None:
    event = AuditEvent(
        action="dashboard_sign_in",
        actor=f"key:{prefix}" if prefix else "anonymous",
        actor_kind="key",
        resource="dashboard",
        purpose=PURPOSE,
        outcome="denied",
        details={"reason": error.code},
    )
    get_audit_log().record(event)


def dashboard_principal(raw: str) -> KeyPrincipal:
    """Verify a key for the dashboards: a tenant key needs the `read` scope (as the API's read routes do),
    an operator needs a platform admin key; raises ScopeDeniedError naming the missing scope."""
    principal = registry().verify_key(raw.strip())
    if not principal.is_admin and READ_SCOPE not in principal.scopes:
        raise ScopeDeniedError(
            f"the dashboards need the {READ_SCOPE!r} scope; this key has only "
            f"{', '.join(principal.scopes) or 'no scopes'} (issue one with "
            f"`shironzi keys issue TENANT --scope {READ_SCOPE}`)",
            scope=READ_SCOPE,
        )
    return principal


def _prefix_of(raw: str) -> str:
    parts = raw.strip().split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "shz" else ""


def sign_in(raw: str) -> Viewer | None:
    """Verify a key and start a session for it; shows the reason and returns None when it is refused."""
    try:
        principal = dashboard_principal(raw)
    except ShironziError as exc:
        _record_failed_sign_in(_prefix_of(raw), exc)
        st.error(f"Sign-in refused: {exc.message}")
        return None
    st.session_state[_KEY] = raw.strip()
    st.session_state.pop(_TENANT, None)
    st.session_state.pop(_LAST_VIEW, None)
    return Viewer(principal.key_prefix, principal.tenant_id, principal.is_admin, principal.scopes)


def sign_out() -> None:
    for key in (_KEY, _TENANT, _LAST_VIEW):
        st.session_state.pop(key, None)


def current_viewer() -> Viewer | None:
    """The signed-in viewer, re-verified on this run; None (and signed out) when the key stopped working."""
    raw = st.session_state.get(_KEY)
    if not raw:
        return None
    try:
        principal = dashboard_principal(raw)
    except ShironziError as exc:
        sign_out()
        st.warning(f"You were signed out: {exc.message}")
        return None
    return Viewer(principal.key_prefix, principal.tenant_id, principal.is_admin, principal.scopes)


def warm_up() -> None:
    """Load the data stack (polars, delta-rs, Altair) and open the registry. Called after the sign-in
    form is on screen, so the imports overlap with typing the key (same thread: no import races)."""
    import altair  # noqa: F401

    import apps.data  # noqa: F401 - lazy by design: the point is to load it while the form is on screen

    registry()


def sign_in_page() -> None:
    """The page shown before sign-in."""
    st.title("Shironzi dashboards")
    st.write(
        "Sign in with a tenant API key to see that tenant's analytics, or with a platform admin key to "
        "operate the platform and pick any tenant."
    )
    with st.form("sign_in"):
        raw = st.text_input("API key", type="password", placeholder="shz_xxxxxxxxxx_...", key="api_key_input")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if not raw.strip():
            st.error("Enter an API key (`shironzi keys issue TENANT` prints one).")
        elif sign_in(raw) is not None:
            st.rerun()
    warm_up()


def tenant_choices(
    query: str = "", *, limit: int = TENANT_SEARCH_LIMIT, keep: str | None = None
) -> list[tuple[str, str]]:
    """(tenant id, label) of at most `limit` live tenants matching `query` (id, slug prefix, slug or name
    substring: a registry query, never a list of every tenant), plus `keep` (the tenant already picked)."""
    found = registry().search_tenants(query, limit=limit)
    if keep and all(t.id != keep for t in found):
        with contextlib.suppress(TenantNotFoundError):
            found = [registry().get_tenant(keep), *found]
    return [(t.id, f"{t.slug} · {t.industry} · {t.region}") for t in found]


def tenant_search(label: str, *, key: str, keep: str | None = None, extra: Sequence[str] = ()) -> str | None:
    """A search box and a selectbox of its matches (at most TENANT_SEARCH_LIMIT); returns the picked id, or one
    of `extra` (e.g. "(all tenants)"), or None when nothing matches."""
    query = st.text_input(f"Find {label.lower()}", key=f"{key}_query", placeholder="slug, name or id")
    choices = dict(tenant_choices(query, keep=keep))
    options = [*extra, *choices]
    if not options:
        st.caption(f"No live tenant matches {query!r}.")
        return None
    index = options.index(keep) if keep in options else 0
    picked = st.selectbox(label, options, index=index, format_func=lambda i: choices.get(i, i), key=key)
    if len(choices) >= TENANT_SEARCH_LIMIT:
        st.caption(f"The first {TENANT_SEARCH_LIMIT} matches: type more of the slug or name to narrow them.")
    return picked


def active_tenant(viewer: Viewer) -> Tenant | None:
    """The tenant in scope: the key's own tenant, or the one the operator picked in the sidebar."""
    if not viewer.is_admin:
        assert viewer.tenant_id is not None
        return registry().get_tenant(viewer.tenant_id)
    chosen = st.session_state.get(_TENANT)
    return registry().get_tenant(chosen) if chosen else None


def select_tenant(tenant_id: str) -> None:
    """Put a tenant in the operator's scope (what the sidebar picker does), e.g. before opening its page."""
    st.session_state[_TENANT] = tenant_id


def tenant_picker(viewer: Viewer) -> None:
    """Sidebar: who is signed in, the operator's tenant picker and sign-out."""
    with st.sidebar:
        if viewer.is_admin:
            current = st.session_state.get(_TENANT)
            picked = tenant_search("Tenant", key="tenant_picker", keep=current)
            if picked is not None:
                st.session_state[_TENANT] = picked
            elif current is None:
                st.caption("No tenants yet: `shironzi tenants create ...` or `shironzi demo`.")
            st.caption(f"Operator · key `{viewer.key_prefix}`")
        else:
            tenant = active_tenant(viewer)
            st.caption(f"Tenant **{tenant.name if tenant else viewer.tenant_id}** · key `{viewer.key_prefix}`")
        if st.button("Sign out", key="sign_out"):
            sign_out()
            st.rerun()


def _record_view(ctx: PageContext, *, outcome: Literal["success", "denied"], reason: str | None = None) -> None:
    """One audit event per page visit (not per widget rerun): who, which tenant, which page."""

    marker = (ctx.page, ctx.tenant_id, outcome)
    if st.session_state.get(_LAST_VIEW) == marker:
        return
    st.session_state[_LAST_VIEW] = marker
    audit(
        ctx.viewer.context(ctx.tenant_id),
        PAGE_VIEW_ACTION,
        tenant_id=ctx.tenant_id,
        resource=f"dashboard:{ctx.page}",
        outcome=outcome,
        details={"page": ctx.page, **({"reason": reason} if reason else {})},
    )


def record_subjects_shown(ctx: PageContext, subject_ids: Sequence[str], *, what: str) -> None:
    """The accounting of disclosures: one audit event naming (pseudonymised) the subjects a page listed,
    once per distinct set per session (a widget rerun that shows the same rows records nothing new)."""
    if ctx.tenant_id is None or not subject_ids:
        return
    marker = (ctx.page, ctx.tenant_id, what, hash(tuple(subject_ids)))
    if st.session_state.get(_LAST_SHOWN) == marker:
        return
    st.session_state[_LAST_SHOWN] = marker
    record_disclosure(ctx.viewer.context(ctx.tenant_id), "dashboard_subjects_shown", tenant_id=ctx.tenant_id,
                      subject_ids=subject_ids, resource=f"dashboard:{ctx.page}", details={"what": what})


def record_export(ctx: PageContext, subject_ids: Sequence[str], *, what: str) -> None:
    """A download button's on_click: the subjects the file carried, as a `data_exported` disclosure."""
    if ctx.tenant_id is not None:
        record_disclosure(ctx.viewer.context(ctx.tenant_id), "data_exported", tenant_id=ctx.tenant_id,
                          subject_ids=subject_ids, resource=f"dashboard:{ctx.page}:download",
                          details={"what": what})


def require_page(page: str, *, audience: Audience, modules: Sequence[str] = ()) -> PageContext:
    """Gate a page for the signed-in viewer and record the view; stops the page with an explanation when
    the viewer may not see it (not signed in, not an operator, a module switched off)."""
    viewer = current_viewer()
    if viewer is None:
        st.info("Sign in first.")
        st.stop()
    assert viewer is not None
    # Drawn by each page (not by the app script) so it is part of every page's own render.
    tenant_picker(viewer)
    if audience == "operator":
        ctx = PageContext(viewer, None, page)
        if not viewer.is_admin:
            _record_view(ctx, outcome="denied", reason="not an operator")
            st.error("This page is for platform operators (sign in with a platform admin key).")
            st.stop()
        _record_view(ctx, outcome="success")
        return ctx
    tenant = active_tenant(viewer)
    if audience == "compliance":
        ctx = PageContext(viewer, tenant, page)
        if not viewer.is_admin and not registry().is_enabled(tenant.id if tenant else "", "audit_access"):
            _record_view(ctx, outcome="denied", reason="module audit_access is off")
            st.warning(
                "The compliance page needs the `audit_access` module, which is off for this tenant. "
                f"An operator can enable it: `shironzi modules enable {tenant.slug if tenant else 'TENANT'} "
                "audit_access`."
            )
            st.stop()
        _record_view(ctx, outcome="success")
        return ctx
    if tenant is None:
        st.info("No tenant selected: pick one in the sidebar (or create one with `shironzi tenants create`).")
        st.stop()
    assert tenant is not None
    ctx = PageContext(viewer, tenant, page)
    missing = [m for m in ("dashboards", *modules) if not registry().is_enabled(tenant.id, m)]
    if missing:
        _record_view(ctx, outcome="denied", reason=f"modules off: {', '.join(missing)}")
        names = ", ".join(f"`{m}`" for m in missing)
        st.warning(
            f"This page needs the {names} module{'s' if len(missing) > 1 else ''}, switched off for "
            f"{tenant.name}. An operator can enable it: `shironzi modules enable {tenant.slug} {missing[0]}`."
        )
        st.stop()
    _record_view(ctx, outcome="success")
    return ctx


def analyst_page(page: str, title: str, *, modules: Sequence[str] = ()) -> tuple[PageContext, Tenant, Vocabulary]:
    """`require_page` for a tenant's analyst page, then its title: "<tenant name>: <title>"."""
    ctx = require_page(page, audience="analyst", modules=modules)
    assert ctx.tenant is not None  # an analyst page always has a tenant in scope (or it stopped)
    st.title(f"{ctx.tenant.name}: {title}")
    show_tenant_notices(ctx.tenant.id)
    return ctx, ctx.tenant, ctx.words


def show_tenant_notices(tenant_id: str) -> None:
    """The notices a tenant sees on every page: its storage above the plan's quota (landing continues)."""
    from apps.data import lake, tenant_notices  # lazy by design, as in `warm_up`

    notices = tenant_notices(lake(), tenant_id).data
    for summary in notices.get_column("summary").to_list() if "summary" in notices.columns else []:
        st.warning(f"Storage quota: {summary}. Ask your operator to raise the quota or change the plan.",
                   icon=":material/database:")
