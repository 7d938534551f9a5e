"""Dashboards show a healthcare tenant's protected patient ids in clear only to a `phi:read` viewer."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from apps.phi import shown_ids
from shironzi.privacy.phi import PhiCipher
from shironzi.tenancy.keystore import get_keystore


def test_patient_ids_are_clear_only_for_phi_read(home: Path) -> None:
    cipher = PhiCipher.of("clinic-1", create=True)
    stored = pl.Series("customer_id", [cipher.protect("pat_0000001"), cipher.protect("pat_0000002"),
                                       cipher.protect("pat_0000001"), None])
    assert shown_ids(stored, tenant_id="clinic-1", scopes=("read",)).to_list() == stored.to_list()
    assert shown_ids(stored, tenant_id="clinic-1", scopes=("admin",)).to_list() == stored.to_list()
    shown = shown_ids(stored, tenant_id="clinic-1", scopes=("read", "phi:read"))
    assert shown.to_list() == ["pat_0000001", "pat_0000002", "pat_0000001", None]
    clear = pl.Series("customer_id", ["cus_1"])  # ids that are not PHI are shown as they are
    assert shown_ids(clear, tenant_id="clinic-1", scopes=("read", "phi:read")).to_list() == ["cus_1"]
    get_keystore().destroy_key("clinic-1")
    assert shown_ids(stored, tenant_id="clinic-1", scopes=("read", "phi:read")).to_list() == stored.to_list()
