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
