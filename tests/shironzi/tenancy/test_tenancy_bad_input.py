"""Every kind of bad input gets a clear ShironziError and leaves the registry exactly as it was."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shironzi.errors import (
    DuplicateSlugError,
    ExpiredKeyError,
    InvalidInputError,
    MalformedKeyError,
    ModuleDependencyError,
    RevokedKeyError,
    ShironziError,
)
from shironzi.tenancy import Registry, TenantContext
from tests.shironzi.tenancy._fixtures import snapshot

GOOD = {
    "slug": "fine-co",
    "name": "Fine Co",
    "industry": "ecommerce",
    "region": "eu-west",
    "plan": "standard",
}


@pytest.fixture
def seeded(registry: Registry, admin: TenantContext) -> Registry:
    registry.provision_tenant(admin, **GOOD)
    return registry


def _unchanged(registry: Registry, error: type[ShironziError], action: Any, match: str | None = None) -> None:
    before = snapshot(registry)
    with pytest.raises(error, match=match):
        action()
    assert snapshot(registry) == before


def test_duplicate_slug(seeded: Registry, admin: TenantContext) -> None:
    _unchanged(
        seeded,
        DuplicateSlugError,
        lambda: seeded.provision_tenant(admin, **{**GOOD, "name": "Other"}),
        match="fine-co",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("industry", "retail"),
        ("region", "mars-1"),
        ("plan", "platinum"),
        ("placement", "shared"),
        ("slug", "No_Caps"),
        ("slug", "ab"),
        ("slug", "-dash"),
        ("slug", "dash-"),
        ("slug", "x" * 64),
        ("name", "  "),
    ],
)
def test_invalid_field(seeded: Registry, admin: TenantContext, field: str, value: str) -> None:
    fields = {**GOOD, "slug": "new-co", field: value}
    _unchanged(seeded, InvalidInputError, lambda: seeded.provision_tenant(admin, **fields), match=field)


@pytest.mark.parametrize("slug", ["admin", "api", "v1", "_platform", "Platform", "healthz"])
def test_reserved_slugs_are_refused(seeded: Registry, admin: TenantContext, slug: str) -> None:
    fields = {**GOOD, "slug": slug}
    _unchanged(seeded, InvalidInputError, lambda: seeded.provision_tenant(admin, **fields), match="reserved")


@pytest.mark.parametrize("name", ["Acme\x00", "Ac\x1b[31mme", "Acme\nInc", "Acme\u202eInc", "Acme\u2028Inc", "\x7f"])
def test_names_with_control_characters_are_refused(seeded: Registry, admin: TenantContext, name: str) -> None:
    fields = {**GOOD, "slug": "new-co", "name": name}
    _unchanged(
        seeded, InvalidInputError, lambda: seeded.provision_tenant(admin, **fields), match="control character"
    )


def test_printable_unicode_names_are_kept(seeded: Registry, admin: TenantContext) -> None:
    tenant, _ = seeded.provision_tenant(admin, **{**GOOD, "slug": "uni-co", "name": "Zürich Ärzte 診療所 🩺"})
    assert tenant.name == "Zürich Ärzte 診療所 🩺"


def test_malformed_key(seeded: Registry) -> None:
    _unchanged(seeded, MalformedKeyError, lambda: seeded.verify_key("shz_not-a-key"))


def test_revoked_key(seeded: Registry, admin: TenantContext) -> None:
    record, key = seeded.issue_key(admin, "fine-co", scopes=["read"])
    seeded.revoke_key(admin, record.prefix)
    _unchanged(seeded, RevokedKeyError, lambda: seeded.verify_key(key))


def test_expired_key(seeded: Registry, admin: TenantContext) -> None:
    _, key = seeded.issue_key(
        admin, "fine-co", scopes=["read"], expires_at=datetime.now(UTC) + timedelta(seconds=0.3)
    )
    time.sleep(0.4)
    _unchanged(seeded, ExpiredKeyError, lambda: seeded.verify_key(key))


def test_enabling_a_module_whose_dependency_is_off(seeded: Registry, admin: TenantContext) -> None:
    seeded.disable_module(admin, "fine-co", "churn_prediction")
    seeded.disable_module(admin, "fine-co", "trend_forecast")
    seeded.disable_module(admin, "fine-co", "analytics")
    _unchanged(
        seeded,
        ModuleDependencyError,
        lambda: seeded.enable_module(admin, "fine-co", "trend_forecast"),
        match="requires analytics",
    )


def test_disabling_a_module_others_depend_on(seeded: Registry, admin: TenantContext) -> None:
    _unchanged(
        seeded,
        ModuleDependencyError,
        lambda: seeded.disable_module(admin, "fine-co", "analytics"),
        match="churn_prediction, trend_forecast",
    )


def test_unknown_module(seeded: Registry, admin: TenantContext) -> None:
    _unchanged(seeded, InvalidInputError, lambda: seeded.enable_module(admin, "fine-co", "time_travel"))


def test_malformed_bulk_import_row(seeded: Registry, admin: TenantContext, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "slug,name,industry\ngood-one,Good,ecommerce\nbad-one,Bad,farming\ngood-two,Good,education\n"
    )
    _unchanged(seeded, InvalidInputError, lambda: seeded.import_tenants(admin, path), match="line 3")
