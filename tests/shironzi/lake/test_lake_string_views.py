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
