"""`shironzi exports run|expire` on SQLite and PostgreSQL registries: a queued export is written once (a second
run is one error line), the sweep deletes files past their expiry, and a bad option is one readable line."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from shironzi.exports import get_export, request_export
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from tests.serving._fixtures import seed_predictions
from tests.shironzi.cli._fixtures import CliResult


def test_run_then_expire(cli: Callable[..., CliResult]) -> None:
    settings = get_settings()
    admin = TenantContext.admin(actor="test", purpose="export cli")
    shop, _ = get_registry().provision_tenant(admin, slug="cli-shop", name="Shop", industry="ecommerce",
                                              plan="standard")
    seed_predictions(settings, shop.id, {"c1": 0.2, "c2": 0.7, "c3": 0.9}, mark=1.0)
    queued = request_export(TenantContext.for_tenant(shop.id, actor="key:test", purpose="api"), shop.id,
                            table="churn_scores", start=dt.date(2026, 1, 6), end=dt.date(2026, 1, 6), fmt="csv")

    code, out, err = cli("exports", "run", queued.id)
    assert code == 0, err
    assert f"export {queued.id}: ready (3 rows," in out
    done = get_export(shop.id, queued.id)
    assert done.uri is not None and Path(done.uri).read_text().count("\n") == 4  # header + 3 rows

    code, _, err = cli("exports", "run", queued.id)
    assert code == 1 and err.startswith("error: invalid_state:") and err.count("\n") == 1

    code, _, err = cli("exports", "expire", "--as-of", "yesterday")
    assert code == 1 and "--as-of must be YYYY-MM-DD" in err and err.count("\n") == 1
    code, out, _ = cli("exports", "expire")
    assert code == 0 and "expired 0 exports" in out and Path(done.uri).exists()
    due = (done.expires_at + dt.timedelta(days=1)).date().isoformat()
    code, out, _ = cli("exports", "expire", "--as-of", due)
    assert code == 0 and "expired 1 exports, deleted 1 files" in out
    assert not Path(done.uri).exists() and get_export(shop.id, queued.id).status == "expired"
