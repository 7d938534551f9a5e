"""Reads that never hold the whole table: read_arrow(among=keys) keeps only the rows matching one of the keys, joined
batch by batch as the table is scanned; read_batches streams the table for a consumer that aggregates as it reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest

from shironzi.errors import InvalidInputError
from shironzi.lake import append, merge, read_arrow, read_batches


def _rows(tenants: int, customers: int) -> pa.Table:
    tenant = [f"t{t}" for t in range(tenants) for _ in range(customers)]
    customer = [f"c{c}" for _ in range(tenants) for c in range(customers)]
    return pa.table({"tenant_id": tenant, "customer_id": customer, "v": list(range(tenants * customers))})


def test_among_keeps_exactly_the_matching_rows_with_filters_columns_and_rewritten_files(tmp_path) -> None:
    uri = str(tmp_path / "t")
    append(uri, _rows(4, 50))
    # a merge rewrites a file: delta-rs may leave string_view columns, which Arrow's filter kernels reject
    merge(uri, pa.table({"tenant_id": ["t1"], "customer_id": ["c7"], "v": [-7]}), keys=["tenant_id", "customer_id"])
    keys = pa.table({"tenant_id": ["t1", "t1", "t2", "t3", "t9"], "customer_id": ["c7", "c8", "c0", "c49", "c0"]})

    got = read_arrow(uri, columns=["v"], filters=[("tenant_id", "in", ["t1", "t2"])], among=keys)
    assert got.column_names == ["v"]
    assert sorted(got.column("v").to_pylist()) == [-7, 58, 100]  # t3's row is outside the filter, t9 has no rows

    whole = read_arrow(uri, among=keys)
    assert whole.schema.field("customer_id").type == pa.string()
    assert sorted(zip(whole.column("tenant_id").to_pylist(), whole.column("customer_id").to_pylist(),
                      strict=True)) == [("t1", "c7"), ("t1", "c8"), ("t2", "c0"), ("t3", "c49")]

    none = read_arrow(uri, columns=["tenant_id", "v"], among=keys.slice(4))
    assert none.num_rows == 0 and none.column_names == ["tenant_id", "v"]


def test_among_names_an_unknown_key_column(tmp_path) -> None:
    uri = str(tmp_path / "t")
    append(uri, _rows(1, 3))
    with pytest.raises(InvalidInputError, match="not in table"):
        read_arrow(uri, among=pa.table({"order_id": ["o1"]}))


def test_read_batches_streams_the_filtered_columns_in_plain_types(tmp_path) -> None:
    uri = str(tmp_path / "t")
    append(uri, _rows(4, 50))
    merge(uri, pa.table({"tenant_id": ["t1"], "customer_id": ["c7"], "v": [-7]}), keys=["tenant_id", "customer_id"])
    reader = read_batches(uri, columns=["customer_id", "v"], filters=[("tenant_id", "in", ["t1", "t2"])], batch_rows=16)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema.names == ["customer_id", "v"] and reader.schema.field("customer_id").type == pa.string()
    streamed = reader.read_all()
    expected = read_arrow(uri, columns=["customer_id", "v"], filters=[("tenant_id", "in", ["t1", "t2"])])
    assert streamed.num_rows == 100
    assert sorted(streamed.column("v").to_pylist()) == sorted(expected.column("v").to_pylist())
    assert -7 in streamed.column("v").to_pylist()
    with pytest.raises(InvalidInputError, match="not in table"):
        read_batches(uri, columns=["order_id"])


PEAK = """
import json, sys
import duckdb
import pyarrow as pa
import shironzi.lake.reads as reads
from shironzi.lake import read_arrow, read_batches
reads.AMONG_BATCH_ROWS = 50_000
uri, mode = sys.argv[1], sys.argv[2]
keys = pa.table({"tenant_id": ["t3"], "customer_id": ["c17"]})
if mode == "streamed":  # DuckDB aggregates the stream: one payload per tenant
    con = duckdb.connect()
    con.register("rows", read_batches(uri, batch_rows=50_000))
    rows = con.sql("select tenant_id, max(payload) from rows group by tenant_id").to_arrow_table()
else:
    rows = read_arrow(uri, among=keys) if mode == "among" else read_arrow(uri)
print(json.dumps({"rows": rows.num_rows, "peak": pa.default_memory_pool().max_memory()}))
"""


@pytest.mark.slow
def test_a_read_among_few_keys_or_streamed_to_an_aggregate_holds_a_file_not_the_table(tmp_path) -> None:
    """2M rows of 100-byte values in 20 files (about 200 MB in Arrow): a plain read peaks above the table's size;
    a read among one key, and a stream that DuckDB aggregates, peak far below it. Each read runs in a fresh
    process, so its Arrow pool's peak is its own."""
    import pyarrow.compute as pc

    uri = str(tmp_path / "big")
    n, files = 2_000_000, 20
    for part in range(files):  # a table of many files, as a partitioned feature table is
        first = part * (n // files)
        index = range(first, first + n // files)
        append(uri, pa.table({"tenant_id": [f"t{i % 10}" for i in index],
                              "customer_id": [f"c{i // 10 % 1000}" for i in index],
                              "payload": pc.utf8_lpad(pa.array([str(i) for i in index]), width=100, padding="0")}))
    peaks = {}
    for mode in ("plain", "among", "streamed"):
        done = subprocess.run([sys.executable, "-c", PEAK, uri, mode], capture_output=True, text=True, timeout=300,
                              check=True)
        peaks[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    size = 100 * n
    assert peaks["plain"]["rows"] == n and peaks["plain"]["peak"] >= size
    assert peaks["among"]["rows"] == n // 10 // 1000
    assert peaks["among"]["peak"] < size / 4, peaks
    assert peaks["streamed"]["rows"] == 10 and peaks["streamed"]["peak"] < size / 4, peaks
