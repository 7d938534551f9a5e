import pyarrow as pa

from shironzi.lake import append, delete, merge, read_arrow


def test_filters_work_after_delete_and_merge(tmp_path):
    uri = str(tmp_path / "t")
    rows = pa.table({"tenant_id": ["a", "a", "b", "b"], "event_id": ["1", "2", "3", "4"], "v": [1, 2, 3, 4]})
    append(uri, rows)
    delete(uri, "event_id = '2'")
    merge(uri, pa.table({"tenant_id": ["b"], "event_id": ["5"], "v": [5]}), keys=["tenant_id", "event_id"])
    got = read_arrow(uri, filters=[("tenant_id", "=", "b")], columns=["event_id"])
    assert sorted(got.column("event_id").to_pylist()) == ["3", "4", "5"]
    assert got.schema.field("event_id").type == pa.string()


def test_delete_leaves_files_that_pyarrow_can_filter(tmp_path):
    import datetime as dt
    import glob

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    uri = str(tmp_path / "p")
    day = dt.date(2026, 1, 1)
    rows = pa.table({"tenant_id": ["a", "a", "b"], "event_id": ["1", "2", "3"], "event_date": [day, day, day]})
    append(uri, rows, partition_by=["event_date"])
    assert delete(uri, "event_id = '2'") == 1
    live = {f.removeprefix("file://") for f in __import__("deltalake").DeltaTable(uri).file_uris()}
    assert live and all(not pa.types.is_string_view(pq.read_schema(f).field("event_id").type) for f in live)
    assert sorted(read_arrow(uri).column("event_id").to_pylist()) == ["1", "3"]
    # The raw PyArrow path that dbt-duckdb's delta source uses must work too.
    dataset = __import__("deltalake").DeltaTable(uri).to_pyarrow_dataset()
    assert dataset.to_table(filter=ds.field("tenant_id") == "a").num_rows == 1
    assert glob.glob(uri + "/event_date=*/*.parquet")


def _live_files(uri: str) -> set[str]:
    from deltalake import DeltaTable

    return {f.removeprefix("file://") for f in DeltaTable(uri).file_uris()}


def _tenant_files(uri: str, day=None, tenants=("a", "b", "c", "d")):  # type: ignore[no-untyped-def]
    """One file per tenant (one append each), 50 rows of each."""
    for tenant in tenants:
        rows = {"tenant_id": [tenant] * 50, "customer_id": [f"c{i}" for i in range(50)], "v": list(range(50))}
        if day is not None:
            rows["event_date"] = [day] * 50
        append(uri, pa.table(rows), partition_by=["event_date"] if day is not None else None)


def _by_tenant(uri: str) -> dict[str, str]:
    import pyarrow.parquet as pq

    return {pq.read_table(f).column("tenant_id")[0].as_py(): f for f in _live_files(uri)}


def _plain(uri: str) -> bool:
    import pyarrow.parquet as pq

    return all(not pa.types.is_string_view(pq.read_schema(f).field("tenant_id").type) for f in _live_files(uri))


def _version(uri: str) -> int:
    from deltalake import DeltaTable

    return DeltaTable(uri).version()


def test_a_delete_rewrites_only_the_file_holding_its_rows_in_one_commit(tmp_path):
    """An erasure deletes one subject of one tenant: one commit rewrites the file holding it, with plain string
    types, and the other tenants' files stay the very same files, in a table and in a day partition."""
    import datetime as dt

    for uri, day in ((str(tmp_path / "flat"), None), (str(tmp_path / "daily"), dt.date(2026, 1, 1))):
        _tenant_files(uri, day)
        before, version = _by_tenant(uri), _version(uri)
        assert delete(uri, "tenant_id = 'b' AND customer_id = 'c7'") == 1
        after = _by_tenant(uri)
        assert _version(uri) == version + 1 and _plain(uri)
        assert {t: after[t] for t in "acd"} == {t: before[t] for t in "acd"}, uri  # untouched
        assert after["b"] != before["b"]
        got = read_arrow(uri, filters=[("tenant_id", "=", "b")])
        assert got.num_rows == 49 and "c7" not in got.column("customer_id").to_pylist()
        assert read_arrow(uri).num_rows == 199
        if day is not None:
            assert set(got.column("event_date").to_pylist()) == {day}


def test_a_delete_leaves_files_sharing_the_tenant_alone_and_commits_nothing_when_nothing_matches(tmp_path):
    """Files (a, b), (b, c) and (d): the subject's row is in the first, so only that file is rewritten, though the
    second holds the same tenant. A delete that matches nothing returns 0 and makes no commit."""
    uri = str(tmp_path / "t")
    for tenants in (("a", "b"), ("b", "c"), ("d",)):
        rows = [t for t in tenants for _ in range(20)]
        append(uri, pa.table({"tenant_id": rows, "customer_id": [f"c{i}" for i in range(len(rows))]}))
    files = _live_files(uri)
    assert delete(uri, "tenant_id = 'b' AND customer_id = 'c25'") == 1
    assert _plain(uri) and len(files - _live_files(uri)) == 1 and len(_live_files(uri) - files) == 1
    assert read_arrow(uri).num_rows == 99
    assert read_arrow(uri, filters=[("tenant_id", "=", "b")]).num_rows == 39
    version = _version(uri)
    assert delete(uri, "tenant_id = 'b' AND customer_id = 'c25'") == 0
    assert _version(uri) == version
