"""Bulk import from CSV / JSON / JSONL: all rows valid or nothing written, errors with line numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shironzi.errors import InvalidInputError
from shironzi.tenancy import PLAN_DEFAULT_MODULES, Registry, TenantContext
from shironzi.tenancy.bulk import ImportRejectedError
from tests.shironzi.tenancy._fixtures import snapshot

INDUSTRIES = ("ecommerce", "healthcare", "education")
PLANS = ("free", "standard", "enterprise")


def _rows(n: int) -> list[dict[str, str]]:
    return [
        {
            "slug": f"bulk-{i:05d}",
            "name": f"Bulk {i}",
            "industry": INDUSTRIES[i % 3],
            "plan": PLANS[(i // 3) % 3],
            "region": ["eu-west", "us-east", ""][i % 3],
        }
        for i in range(n)
    ]


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slug", "name", "industry", "plan", "region"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_import_provisions_every_row(registry: Registry, admin: TenantContext, tmp_path: Path) -> None:
    rows = _rows(1500)
    seen: list[tuple[str, int, int]] = []
    result = registry.import_tenants(
        admin,
        _write_csv(tmp_path / "t.csv", rows),
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert result.count == 1500
    assert registry.list_tenants(limit=1)[1] == 1500
    by_slug = {p.tenant.slug: p for p in result.tenants}
    sample = by_slug["bulk-00007"]  # healthcare, enterprise -> dedicated
    assert (sample.tenant.industry, sample.tenant.plan, sample.tenant.placement) == (
        "healthcare",
        "enterprise",
        "dedicated",
    )
    assert sample.tenant.lake_namespace.endswith(f"/us-east/tenants/{sample.tenant.id}")
    assert by_slug["bulk-00002"].tenant.region == registry.settings.default_region  # empty cell -> default
    assert by_slug["bulk-00002"].tenant.placement == "pooled"
    assert registry.verify_key(sample.api_key).tenant_id == sample.tenant.id
    assert set(registry.modules(sample.tenant.id)) == set(PLAN_DEFAULT_MODULES["enterprise"])
    assert registry.get_tenant("bulk-00001").region == "us-east"
    assert len(registry.events()) == 3000 and len({p.api_key for p in result.tenants}) == 1500
    assert seen and seen[-1][0] == "writing" and seen[-1][1] == seen[-1][2]


def test_json_and_jsonl_imports(registry: Registry, admin: TenantContext, tmp_path: Path) -> None:
    array = tmp_path / "t.json"
    array.write_text(json.dumps(_rows(5), indent=2))
    lines = tmp_path / "t.jsonl"
    lines.write_text("\n".join(json.dumps({**r, "slug": r["slug"] + "-l"}) for r in _rows(4)) + "\n")
    assert registry.import_tenants(admin, array).count == 5
    assert registry.import_tenants(admin, lines).count == 4
    assert registry.list_tenants()[1] == 9


def _rejected(registry: Registry, admin: TenantContext, path: Path) -> ImportRejectedError:
    before = snapshot(registry)
    with pytest.raises(ImportRejectedError) as err:
        registry.import_tenants(admin, path)
    assert snapshot(registry) == before, "a rejected import must write nothing"
    return err.value


def test_malformed_csv_rows_reject_the_whole_file_with_line_numbers(
    registry: Registry,
    admin: TenantContext,
    tmp_path: Path,
) -> None:
    registry.provision_tenant(admin, slug="taken", name="T", industry="ecommerce")
    rows = _rows(10)
    rows[2]["industry"] = "retail"  # line 4
    rows[5]["plan"] = "gold"  # line 7
    rows[6]["slug"] = "Bad_Slug"  # line 8
    rows[7]["slug"] = rows[0]["slug"]  # line 9 repeats line 2
    rows[8]["slug"] = "taken"  # line 10 exists already
    rows[9]["region"] = "mars-1"  # line 11
    error = _rejected(registry, admin, _write_csv(tmp_path / "bad.csv", rows))
    assert [e.line for e in error.errors] == [4, 7, 8, 9, 10, 11]
    assert "line 4: invalid industry 'retail'" in error.message
    assert "line 9: slug 'bulk-00000' repeats line 2" in error.message
    assert "line 10: slug 'taken' already exists" in error.message
    assert "nothing was written" in error.message and "\n" not in error.message


def test_structural_errors_name_their_line(registry: Registry, admin: TenantContext, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(
        '[\n  {"slug": "ok-one", "name": "A", "industry": "ecommerce"},\n  {"slug": "x",,}\n]\n'
    )
    assert _rejected(registry, admin, bad_json).errors[0].line == 3

    wrong_row = tmp_path / "wrong.json"
    wrong_row.write_text(
        '[\n  {"slug": "ok-one", "name": "A", "industry": "ecommerce"},\n\n  {"slug": "ok-two",\n'
        '   "name": "B", "industry": "farming"}\n]'
    )
    error = _rejected(registry, admin, wrong_row)
    assert [e.line for e in error.errors] == [4] and "farming" in error.message

    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text(
        '{"slug": "ok-one", "name": "A", "industry": "ecommerce"}\n\n["not", "an", "object"]\n'
    )
    assert _rejected(registry, admin, bad_jsonl).errors[0].line == 3

    unknown_column = tmp_path / "cols.csv"
    unknown_column.write_text("slug,name,industy\nabc,A,ecommerce\n")
    error = _rejected(registry, admin, unknown_column)
    assert error.errors[0].line == 1 and "industy" in error.message

    ragged = tmp_path / "ragged.csv"
    ragged.write_text('slug,name,industry\nabc,"multi\nline name",ecommerce\nabd,B\n')
    assert _rejected(registry, admin, ragged).errors[0].line == 4

    wrong_type = tmp_path / "types.jsonl"
    wrong_type.write_text('{"slug": "ok-one", "name": 5, "industry": "ecommerce"}\n')
    assert "name" in _rejected(registry, admin, wrong_type).message


def test_unusable_files_are_refused(registry: Registry, admin: TenantContext, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        registry.import_tenants(admin, tmp_path / "missing.csv")
    other = tmp_path / "tenants.xlsx"
    other.write_text("x")
    with pytest.raises(InvalidInputError, match="format"):
        registry.import_tenants(admin, other)
    empty = tmp_path / "empty.csv"
    empty.write_text("slug,name,industry\n")
    with pytest.raises(InvalidInputError, match="no rows"):
        registry.import_tenants(admin, empty)
