"""Scanning a Parquet file for a data subject: with the subject's clear values (during its erasure) a vectorised
substring test skips the rows that cannot hold it, equality decides plain strings, and the count is the one the
digests alone give."""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shironzi.audit import erasure_scan
from shironzi.audit.erasure_scan import Matcher, scan_file, subject_digest

SUBJECT = ("c_1", "tok_abc")
ROWS = [  # (tenant_id, customer_id, properties, raw_payload, holds the subject of t_a)
    ("t_a", "c_1", "{}", None, True),
    ("t_a", "c_10", json.dumps({"ref": "c_1"}), None, True),  # a JSON value
    ("t_a", "c_10", json.dumps({"ref": "c_10"}), None, False),  # a substring, not the value
    ("t_a", "c_2", "note c_1 here", None, False),  # plain text: only the whole text is a value
    ("t_a", "c_2", json.dumps({"nested": ["x", {"id": "tok_abc"}]}), None, True),  # its pseudonym, nested
    ("t_a", "c_3", '{"ref": "c_1"', None, True),  # malformed JSON: whole tokens
    ("t_b", "c_1", "{}", None, False),  # another tenant's customer of the same id
    ("t_a", "c_9", "tok_abc", None, True),  # a plain string that is the value, in another column
    ("t_a", "tok_abc", None, None, True),  # the pseudonym as the customer id, a null beside it
    ("t_a", "c_4", "\x1c" + json.dumps({"ref": "c_1"}), None, True),  # JSON once stripped of a separator char
    (None, None, None, json.dumps({"tenant_id": "t_a", "customer_id": "c_1"}), True),  # quarantined, claims t_a
    (None, None, None, json.dumps({"tenant_id": "t_b", "customer_id": "c_1"}), False),
    *[("t_a", f"c_{n}", json.dumps({"n": n}), None, False) for n in range(200, 500)],
]


@pytest.fixture
def data_file(tmp_path: Path) -> str:
    columns = list(zip(*ROWS, strict=True))
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"tenant_id": pa.array(columns[0], pa.string()),
                             "customer_id": pa.array(columns[1], pa.string()),
                             "properties": pa.array(columns[2], pa.string()),
                             "raw_payload": pa.array(columns[3], pa.string()),
                             "amount": pa.array(range(len(ROWS)), pa.int64())}), path)
    return str(path)


def test_the_clear_values_find_exactly_what_the_digests_find(data_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    digests = frozenset(subject_digest("t_a", v) for v in SUBJECT)
    expected = sum(row[-1] for row in ROWS)
    assert scan_file(data_file, Matcher("t_a", "subject", digests)) == (len(ROWS), expected)  # a receipt's check

    checked: list[int] = []
    real = erasure_scan._scan_rows
    monkeypatch.setattr(erasure_scan, "_scan_rows", lambda rows, m: checked.append(len(rows)) or real(rows, m))
    assert scan_file(data_file, Matcher("t_a", "subject", digests, values=frozenset(SUBJECT))) == (len(ROWS), expected)
    # of the 11 rows that mention a value verbatim, a plain string is decided by equality, vectorised (c_1 holds it,
    # "c_10" and "note c_1 here" do not); only JSON-looking strings that mention it and quarantined rows (no tenant
    # but in their payload) get the exact, per-value check
    assert checked == [7]
    assert "c_1" not in repr(Matcher("t_a", "subject", digests, values=frozenset(SUBJECT)))  # never logged


@pytest.mark.parametrize("values", [("12345",), ("c_1", "ann smith"), ('c"1',)])
def test_values_that_may_not_appear_verbatim_are_checked_row_by_row(values: tuple[str, ...]) -> None:
    """A number may be written otherwise in JSON (1.2345e4) and a space or quote may be escaped or split into
    tokens: such subjects get no substring shortcut."""
    digests = frozenset(subject_digest("t_a", v) for v in values)
    assert Matcher("t_a", "subject", digests, values=frozenset(values)).verbatim_values() is None
    assert Matcher("t_a", "tenant", values=frozenset(("c_1",))).verbatim_values() is None


def test_a_scan_reads_only_the_string_columns_of_the_row_groups_that_can_hold_the_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file clustered by tenant has one row group per tenant here; the scan reads the footer, then only the
    tenant's row group and the quarantine's null-tenant one, and no numeric column; the counts are unchanged."""
    groups = [("t_a", "c_1"), ("t_b", "c_1"), ("t_c", "c_1"), (None, None)]
    path = tmp_path / "clustered.parquet"
    with pq.ParquetWriter(path, pa.schema([("tenant_id", pa.string()), ("customer_id", pa.string()),
                                            ("raw_payload", pa.string()), ("amount", pa.float64())])) as writer:
        for tenant, customer in groups:
            payload = json.dumps({"tenant_id": "t_b", "customer_id": "c_1"}) if tenant is None else None
            writer.write_table(pa.table({"tenant_id": pa.array([tenant] * 50, pa.string()),
                                         "customer_id": pa.array([customer] * 50, pa.string()),
                                         "raw_payload": pa.array([payload] * 50, pa.string()),
                                         "amount": pa.array([1.5] * 50)}))
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    reads: list[tuple[list[int], list[str]]] = []
    real = erasure_scan.parquet_file

    class Recording:
        def __init__(self, parquet: pq.ParquetFile) -> None:
            self.parquet = parquet
            self.metadata, self.schema_arrow = parquet.metadata, parquet.schema_arrow

        def read_row_groups(self, row_groups: list[int], columns: list[str]) -> pa.Table:
            reads.append((list(row_groups), list(columns)))
            return self.parquet.read_row_groups(row_groups, columns=columns)

    @contextlib.contextmanager
    def recording(uri: str) -> Iterator[Recording]:
        with real(uri) as parquet:
            yield Recording(parquet)

    monkeypatch.setattr(erasure_scan, "parquet_file", recording)
    subject = frozenset({subject_digest("t_b", "c_1")})
    assert scan_file(str(path), Matcher("t_b", "subject", subject)) == (200, 100)  # its rows and the claiming ones
    assert reads == [([1, 3], ["tenant_id", "customer_id", "raw_payload"])]
    reads.clear()
    assert scan_file(str(path), Matcher("t_z", "tenant")) == (200, 0)
    assert reads == [([3], ["tenant_id", "customer_id", "raw_payload"])]  # only the nulls could claim t_z


def test_many_files_are_scanned_at_once_in_the_callers_context_and_counted_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = []
    for n in range(8):
        path = tmp_path / f"part-{n}.parquet"
        pq.write_table(pa.table({"tenant_id": ["t_a"] * (n + 1), "customer_id": ["c_1"] * n + ["c_2"]}), path)
        paths.append(str(path))
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    who.set("the erasure")
    barrier = threading.Barrier(erasure_scan.SCAN_THREADS, timeout=20)  # broken unless that many run at once
    real = erasure_scan.scan_file
    seen: list[str] = []

    def together(path: str, matcher: Matcher) -> tuple[int, int]:
        barrier.wait()
        seen.append(who.get())
        return real(path, matcher)

    monkeypatch.setattr(erasure_scan, "scan_file", together)
    matcher = Matcher("t_a", "subject", frozenset({subject_digest("t_a", "c_1")}))
    assert erasure_scan.scan_files(paths, matcher) == [(n + 1, n) for n in range(8)]
    assert seen == ["the erasure"] * 8
