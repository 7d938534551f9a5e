"""PHI fields of the healthcare contract are encrypted deterministically before bronze: no clear patient id or
clinical code lands, counts per group are those of the clear values, and the tenant key reads them back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ingestion.bronze import BronzeLander
from ingestion.contracts import decode_json_records
from shironzi.errors import KeyDestroyedError
from shironzi.privacy.phi import PhiCipher, is_protected, stored_customer_ids
from shironzi.tenancy.keystore import get_keystore
from tests.ingestion._fixtures import provision

SPECIALTIES = ("cardiology", "dermatology", "cardiology", "pediatrics", "cardiology", "dermatology")


def _payloads(tenant_ids: list[str]) -> list[bytes]:
    """Appointments and claims of three patients per tenant (the same patient ids in every tenant)."""
    out = []
    for tenant in tenant_ids:
        for i, specialty in enumerate(SPECIALTIES):
            out.append({"tenant_id": tenant, "event_id": f"apt-{i}", "customer_id": f"pat_{i % 3:05d}",
                        "event_type": "appointment_missed", "event_time": "2025-03-01T10:00:00Z",
                        "properties": {"appointment_id": f"apt_{i}", "specialty": specialty, "notified": True}})
        out.append({"tenant_id": tenant, "event_id": "clm-1", "customer_id": "pat_00001",
                    "event_type": "claim_submitted", "event_time": "2025-03-01T11:00:00Z", "amount": 120.0,
                    "currency": "USD", "properties": {"claim_id": "clm_1", "procedure_code": "cpt_99213"}})
    return [json.dumps(p).encode() for p in out]


def test_healthcare_phi_is_encrypted_deterministically_per_tenant(home: Path) -> None:
    clinic, other_clinic, shop = provision([("clinic-one", "healthcare", "standard"),
                                            ("clinic-two", "healthcare", "standard"),
                                            ("shop-one", "ecommerce", "standard")])
    payloads = _payloads([clinic.id, other_clinic.id])
    payloads.append(json.dumps({  # quarantined (wrong type): its raw payload keeps the shape, PHI protected
        "tenant_id": clinic.id, "event_id": "bad-1", "customer_id": "pat_00009", "event_type": "appointment_missed",
        "event_time": "2025-03-01T10:00:00Z",
        "properties": {"appointment_id": "apt_9", "specialty": "orthopedics", "notified": "yes"}}).encode())
    payloads.append(json.dumps({
        "tenant_id": shop.id, "event_id": "s1", "customer_id": "cus_1", "event_type": "session_started",
        "event_time": "2025-03-01T10:00:00Z", "properties": {"session_id": "ses_1", "device": "web"}}).encode())
    lander = BronzeLander()
    decoded = decode_json_records(payloads, [f"p/{i}" for i in range(len(payloads))], source="test")
    result = lander.validate(decoded, source="test")
    rows = result.valid.to_pylist()

    assert len(rows) == len(payloads) - 1 and result.quarantined.num_rows == 1
    (bad,) = result.quarantined.to_pylist()
    assert json.loads(bad["raw_payload"])["properties"]["notified"] == "yes"
    landed = json.dumps([*rows, bad], default=str)
    for clear in ("pat_0000", "cpt_99213", "cardiology", "dermatology", "pediatrics", "orthopedics"):
        assert clear not in landed, f"{clear} landed in clear"
    shop_row = next(r for r in rows if r["tenant_id"] == shop.id)
    assert shop_row["customer_id"] == "cus_1" and json.loads(shop_row["properties"])["device"] == "web"

    mine = [r for r in rows if r["tenant_id"] == clinic.id]
    assert all(is_protected(r["customer_id"]) for r in mine)
    specialties = [json.loads(r["properties"]).get("specialty") for r in mine if r["event_type"] != "claim_submitted"]
    # deterministic: the counts per group (specialty, patient) are those of the clear values
    assert sorted(Counter(specialties).values()) == sorted(Counter(SPECIALTIES).values())
    assert len({r["customer_id"] for r in mine}) == 3
    theirs = {r["customer_id"] for r in rows if r["tenant_id"] == other_clinic.id}
    assert not theirs & {r["customer_id"] for r in mine}, "the same patient id must differ per tenant"

    cipher = PhiCipher.of(clinic.id)
    assert cipher.reveal(json.loads(bad["raw_payload"])["customer_id"]) == "pat_00009"
    assert Counter(cipher.reveal(s) for s in specialties) == Counter(SPECIALTIES)
    claim = next(r for r in mine if r["event_type"] == "claim_submitted")
    assert cipher.reveal(claim["customer_id"]) == "pat_00001"
    assert cipher.reveal(json.loads(claim["properties"])["procedure_code"]) == "cpt_99213"
    assert cipher.protect("pat_00001") == claim["customer_id"], "the API looks a patient up by encrypting its id"
    # outside ids (the simulator's ground truth) join the lake through the same mapping; ecommerce ids stay
    industries = {clinic.id: "healthcare", shop.id: "ecommerce"}
    assert stored_customer_ids([clinic.id, shop.id], ["pat_00001", "cus_1"], industries=industries) == [
        claim["customer_id"], "cus_1"]
    with pytest.raises(KeyDestroyedError):
        PhiCipher.of(other_clinic.id).reveal(claim["customer_id"])  # another tenant's key reads nothing

    get_keystore().destroy_key(clinic.id)
    with pytest.raises(KeyDestroyedError):
        PhiCipher.of(clinic.id)


def test_a_batch_for_many_new_clinics_creates_their_keys_in_one_keystore_call(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new healthcare tenant's PHI key was created with a keystore commit of its own, on its first batch (at
    100,000 tenants, a stream slice made tens of thousands of commits); a batch now reads and creates them all in
    one call, and a destroyed key still stops its tenant's rows."""
    clinics = provision([(f"clinic-{n:02d}", "healthcare", "standard") for n in range(12)])
    store = type(get_keystore())
    batched: list[list[str]] = []
    real = store.get_or_create_keys
    monkeypatch.setattr(store, "get_or_create_keys", lambda self, ids: batched.append(list(ids)) or real(self, ids))
    monkeypatch.setattr(store, "get_or_create_key", lambda *_: pytest.fail("one keystore call per tenant"))
    payloads = _payloads([c.id for c in clinics])
    decoded = decode_json_records(payloads, [f"p/{i}" for i in range(len(payloads))], source="test")
    result = BronzeLander().validate(decoded, source="test")
    assert result.valid.num_rows == len(payloads)
    assert sorted(batched[0]) == sorted(c.id for c in clinics)  # the PHI pass: every clinic at once
    assert all(is_protected(r["customer_id"]) for r in result.valid.to_pylist())
    keys = get_keystore().get_or_create_keys([c.id for c in clinics])
    cipher = PhiCipher(clinics[3].id, keys[clinics[3].id])
    mine = [r for r in result.valid.to_pylist() if r["tenant_id"] == clinics[3].id]
    assert {cipher.reveal(r["customer_id"]) for r in mine} == {"pat_00000", "pat_00001", "pat_00002"}
    # its twin, the outside ids' mapping to the lake, reads every clinic's key in one call too
    stored = stored_customer_ids([c.id for c in clinics], ["pat_00001"] * len(clinics),
                                 industries={c.id: "healthcare" for c in clinics})
    assert sorted(batched[-1]) == sorted(c.id for c in clinics) and stored[3] == cipher.protect("pat_00001")

    get_keystore().destroy_key(clinics[0].id)
    with pytest.raises(KeyDestroyedError):
        BronzeLander().validate(decoded, source="test")
