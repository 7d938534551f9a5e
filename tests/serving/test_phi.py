"""PHI after the demo's pipeline, and minimum necessary in the API.

- Every file the pipeline wrote under the home (lake, dbt, online store, MLflow runs and artifacts, logs,
  registry) is scanned for a healthcare tenant's clear patient ids and clinical codes: there are none, and
  the protected values in the model's artifacts are unreadable once the tenant key is destroyed.
- The BOLA/scope matrix over the customer routes, for PHI: a patient id is shown in clear only to a key with
  `phi:read`, protected to a `read` key, and not found by another tenant's key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shironzi.audit.log import flush_all, read_audit_events
from shironzi.privacy.phi import PhiCipher
from tests.serving._fixtures import (
    ApiWorld,
    HealthTenant,
    TrainedModel,
    add_healthcare_tenant,
    build_world,
    customer_requests,
    documented_customer_operations,
    isolated_home,
)

CLEAR_PHI = re.compile(rb"pat_\d{7}|cpt_\d{5}|cardiology|dermatology|pediatrics|orthopedics")
SOURCE_DROPS = "landing"  # the files the tenants delivered (their source system's export), not written by us


def _parquet_text(path: Path) -> bytes:
    import pyarrow.parquet as pq

    return repr(pq.read_table(path).to_pylist()).encode()


def _duckdb_text(path: Path) -> bytes:
    """Every table of a DuckDB file as text (its pages are compressed: bytes on disk would hide strings)."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.sql("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        return b"".join(repr(con.sql(f'SELECT * FROM "{s}"."{t}"').fetchall()).encode() for s, t in tables)


def clear_phi_in(home: Path) -> dict[str, list[str]]:
    """Files under `home` (source drops aside) holding clear PHI: path -> a few of the values found."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        relative = path.relative_to(home)
        if relative.parts[0] == SOURCE_DROPS:
            continue
        if path.suffix == ".parquet":
            text = _parquet_text(path)
        elif path.suffix == ".duckdb":
            text = _duckdb_text(path)
        else:
            text = path.read_bytes()
        hits = sorted({m.decode() for m in CLEAR_PHI.findall(text)})
        if hits:
            found[relative.as_posix()] = hits[:3]
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_no_clear_phi_in_any_file_after_the_pipeline(trained_model: TrainedModel) -> None:
    home = trained_model.home
    assert any((home / SOURCE_DROPS).rglob("*pat_*")) or any(
        CLEAR_PHI.search(p.read_bytes()) for p in (home / SOURCE_DROPS).rglob("*") if p.is_file()
    ), "the source drops must hold clear PHI, or the scan proves nothing"
    found = clear_phi_in(home)
    assert not found, "\n".join(f"{path}: {hits}" for path, hits in found.items())


@pytest.fixture(scope="module")
def phi_world(
    tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel
) -> Iterator[tuple[ApiWorld, HealthTenant]]:
    root = tmp_path_factory.mktemp("api-phi") / "home"
    with isolated_home(root, MLFLOW_TRACKING_URI=trained_model.tracking_uri) as s:
        world = build_world(s, expired_key=False)
        yield world, add_healthcare_tenant(world)


@pytest.fixture(scope="module")
def phi_client(phi_world: tuple[ApiWorld, HealthTenant]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(phi_world[0].settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.integration
def test_customer_routes_show_phi_only_to_phi_read_keys(
    phi_client: Any, phi_world: tuple[ApiWorld, HealthTenant]
) -> None:
    """On every customer route and source: a healthcare client names its patient in clear; a `read` key gets
    the protected id back and never the clear one, a `read` + `phi:read` key gets the clear id, and another
    tenant's key finds nothing under that id. Audit events carry only the protected id."""
    world, clinic = phi_world
    operations, components = documented_customer_operations(phi_client)
    failures: list[str] = []
    for method, path, op in operations:
        for source, spec in customer_requests(op, path, components, world, clinic.patient):
            for kind, shown, hidden in (("phi_masked", clinic.stored, clinic.patient),
                                        ("phi_reader", clinic.patient, clinic.stored), ("own", None, None)):
                response = phi_client.request(method.upper(), headers=world.auth(kind), **spec)
                where = f"{method.upper()} {path} {source} as {kind}: {response.status_code} {response.text[:300]}"
                if kind == "own":  # an ecommerce tenant's key: the patient is not its customer
                    body = response.json()
                    if response.status_code not in (200, 404) or body.get("results") or clinic.stored in response.text:
                        failures.append(f"another tenant found the patient: {where}")
                    continue
                if response.status_code != 200:
                    failures.append(f"expected 200: {where}")
                    continue
                shown_ids = [r["customer_id"] for r in response.json().get("results", [response.json()])]
                if shown_ids != [shown] or hidden in response.text:
                    failures.append(f"expected {shown} and never {hidden}: {where}")
    assert not failures, "\n".join(failures)
    unknown = "pat_0009999"  # not found: a phi:read key gets back the id it sent, a read key its protected form
    for kind, expected in (("phi_reader", unknown), ("phi_masked", PhiCipher.of(clinic.tenant_id).protect(unknown))):
        response = phi_client.post("/v1/churn:batch", headers=world.auth(kind),
                                   json={"customer_ids": [clinic.patient, unknown], "source": "batch"})
        assert response.status_code == 200 and response.json()["not_found"] == [expected], response.text
        assert kind == "phi_reader" or unknown not in response.text
    flush_all()
    events = read_audit_events(filters=[("tenant_id", "=", clinic.tenant_id)])
    assert events.num_rows and clinic.patient not in repr(events.to_pylist()), "a clear patient id was audited"


@pytest.mark.integration
def test_destroying_the_key_makes_phi_in_model_artifacts_unreadable(trained_model: TrainedModel,
                                                                    tmp_path: Path) -> None:
    """The churn run's holdout artifact holds the healthcare patients' protected ids; the tenant key reads
    them, and once it is destroyed (in a copy of the session's keystore) nothing can."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from shironzi.errors import KeyDestroyedError
    from shironzi.privacy.phi import is_protected
    from shironzi.settings import get_settings
    from shironzi.tenancy.keystore import LocalKeystore

    clinic = trained_model.demo_tenants["northwind-clinic"]
    holdouts = sorted(trained_model.home.rglob("holdout.parquet"))
    assert holdouts, "the churn run logged no holdout artifact"
    ids: set[str] = set()
    for path in holdouts:
        rows = pq.read_table(path, columns=["tenant_id", "customer_id"])
        ids.update(pc.filter(rows.column("customer_id"), pc.equal(rows.column("tenant_id"), clinic)).to_pylist())
    assert ids and all(is_protected(cid) for cid in ids)
    shutil.copytree(trained_model.home / "keystore", tmp_path / "keystore")
    keystore = LocalKeystore(tmp_path / "keystore", master_key=get_settings().master_key.get_secret_value())
    assert all(PhiCipher.of(clinic, keystore=keystore).reveal(cid).startswith("pat_") for cid in ids)
    keystore.destroy_key(clinic)
    with pytest.raises(KeyDestroyedError):
        PhiCipher.of(clinic, keystore=keystore)


@pytest.mark.integration
def test_ground_truth_finds_the_patients_features_through_their_protected_ids(trained_model: TrainedModel) -> None:
    """The simulator's ground truth names patients in clear; mapped with `stored_customer_ids` (as the
    oracle comparison does) they find their features in the lake, in clear they find none."""
    import polars as pl
    import pyarrow as pa

    from feature_store.retrieval import ENTITY_TIMESTAMP, get_training_set
    from ingestion.synthetic import simulate
    from orchestration.demo import DEMO_TENANTS
    from shironzi.privacy.phi import stored_customer_ids

    industries = {trained_model.demo_tenants[t.slug]: t.industry for t in DEMO_TENANTS}
    with isolated_home(trained_model.home) as settings:  # the same simulation as the fixture's demo stages
        sim = simulate(list(industries.items()), customers=300, days=100, seed=7, bad_share=0.002)
        rows = sim.snapshots.filter(pl.col("tenant_id") == trained_model.demo_tenants["harbor-health"]).head(200)
        tenants, clear = rows["tenant_id"].to_list(), rows["customer_id"].to_list()
        found = {}
        for label, ids in (("clear", clear), ("stored", stored_customer_ids(tenants, clear, industries=industries))):
            entities = pa.table({"tenant_id": pa.array(tenants, pa.string()), "customer_id": pa.array(ids, pa.string()),
                                 ENTITY_TIMESTAMP: rows["snapshot_date"].to_arrow()})
            features = get_training_set(entities, ["customer_activity:events_7d"], settings=settings)
            found[label] = features.num_rows - features.column("events_7d").null_count
    assert rows.height and found["clear"] == 0 and found["stored"] >= rows.height // 2, found
