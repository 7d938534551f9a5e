"""The vectorised pseudonymisation of `properties` gives the same documents, tokens and PII table rows as the
reference row-by-row algorithm (parse, replace top-level PII keys, re-serialise), on every shape of text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shironzi.privacy.pii_table import PendingPiiRows
from shironzi.privacy.pseudonymise import pseudonymise_batch
from shironzi.privacy.tokens import TOKEN_PATTERN, pseudonym
from shironzi.tenancy.keystore import get_keystore

PII = ("date_of_birth", "email", "full_name", "phone", "shipping_postcode")
RECOVERABLE = ("date_of_birth", "email", "full_name", "phone")
ALREADY = "tok_" + "ab" * 16

# (tenant, customer, properties text): every shape the landing path can meet.
ROWS: list[tuple[str, str | None, str | None]] = [
    ("t_a", "c1", '{"email":"ann@example.com","full_name":"Ann","plan":"pro"}'),
    ("t_a", "c2", '{"order_id":"o1","item_count":2,"shipping_postcode":"SW1A 1AA"}'),
    ("t_b", "c1", '{"email":"ann@example.com","full_name":"Ann B","plan":"free"}'),  # same value, other tenant
    ("t_a", "c3", '{ "email" : "bob@example.com" ,\n "full_name":\t"Bob", "signup_channel": "email"}'),  # "email" twice
    ("t_a", "c4", '{"full_name":"Zoë Ünïcode 山田","email":"zoe@example.com"}'),  # raw UTF-8
    ("t_a", "c5", json.dumps({"full_name": "Zoë Ünïcode", "email": "z2@example.com"})),  # \\u escapes
    ("t_a", "c6", '{"full_name":"O\\"Brien \\\\ Sons","email":"ob@example.com"}'),  # escaped quote, backslash
    ("t_a", "c7", '{"email":null,"full_name":"Nully"}'),  # a null PII value stays null
    ("t_a", "c8", f'{{"email":"{ALREADY}","full_name":"Tok"}}'),  # already tokenised: kept, not stored
    ("t_a", "c9", '{"meta":{"email":"nested@example.com"},"full_name":"Nest"}'),  # nested key: not top level
    ("t_a", "c10", '{"email":"first@example.com","email":"last@example.com"}'),  # duplicate key: last wins
    ("t_c", "c11", '{"full_name":"Pat","date_of_birth":631152000000,"phone":"+44 20 7946 0000"}'),  # int value
    ("t_c", "c12", '{"full_name":"Pat","date_of_birth":"1990-01-01T00:00:00Z","phone":"+44 20 7946 0000"}'),
    ("t_a", "c13", '{"email":["a@example.com"],"full_name":{"first":"Li"}}'),  # non-string values
    ("t_a", "c14", '{"email":"broken@example.com",'),  # not JSON: left as it is
    ("t_a", "c15", '["email","full_name"]'),  # JSON, not an object: left as it is
    ("t_a", "c16", None),  # no properties
    ("t_a", None, '{"full_name":"No Customer","price":1.10,"big":123456789012345678901234567890}'),
    ("t_a", "c17", '{"full_name":"Ann"}'),  # same value again: same token, PII row of the first row
    ("t_a", "c18", '{"full_name":"Brace {x} \\"q\\"","email":"ann@example.com"}'),  # braces and escapes
    ("t_a", "c19", '{"product_id":"p1","category":"shoes"}'),  # no PII at all
    ("t_a", "c20", '{"full_name":"Éva","note":"email me"}'),
]


def _table(rows: list[tuple[str, str | None, str | None]]) -> pa.Table:
    return pa.table(
        {
            "tenant_id": pa.array([r[0] for r in rows], pa.string()),
            "customer_id": pa.array([r[1] for r in rows], pa.string()),
            "properties": pa.array([r[2] for r in rows], pa.string()),
        }
    )


def _reference(rows: list[tuple[str, str | None, str | None]]) -> tuple[list[str | None], dict[tuple[str, str], Any]]:
    """The original per-row algorithm, written independently of the code under test."""
    store = get_keystore()
    texts: list[str | None] = []
    pii_rows: dict[tuple[str, str], Any] = {}
    for tenant, customer, text in rows:
        doc = None
        if text is not None:
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
        if not isinstance(doc, dict) or not set(PII) & doc.keys():
            texts.append(text)
            continue
        changed = False
        for name in sorted(set(PII) & doc.keys()):
            value = doc[name]
            if value is None or (isinstance(value, str) and TOKEN_PATTERN.match(value)):
                continue
            plain = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            token = pseudonym(store.get_or_create_key(tenant), plain)
            if name in RECOVERABLE and (tenant, token) not in pii_rows:
                pii_rows[(tenant, token)] = (name, customer, json.dumps(value))
            doc[name] = token
            changed = True
        texts.append(json.dumps(doc, separators=(",", ":")) if changed else text)
    return texts, pii_rows


def _same_document(got: str | None, want: str | None) -> bool:
    if got is None or want is None:
        return got == want
    try:
        return bool(json.loads(got) == json.loads(want))
    except ValueError:
        return got == want


def test_vectorised_properties_match_the_reference_row_by_row_algorithm(home: Path) -> None:
    pending = PendingPiiRows()
    out = pseudonymise_batch(_table(ROWS), pii_fields=PII, recoverable_fields=RECOVERABLE, pending=pending)
    want_texts, want_rows = _reference(ROWS)
    got_texts = out.column("properties").to_pylist()
    for n, (got, want) in enumerate(zip(got_texts, want_texts, strict=True)):
        assert _same_document(got, want), (n, ROWS[n][2], got, want)
    got_rows = {(e["tenant_id"], e["token"]): (e["field"], e["customer_id"], e["raw"]) for e in pending.entries}
    assert got_rows == want_rows
    assert len(pending.entries) == len(got_rows)  # one entry per (tenant, token)
    # No clear PII value survives at the top level of any document that is a JSON object.
    for text in got_texts:
        doc = json.loads(text) if text and text.startswith("{") and text.endswith("}") else None
        for name in PII if isinstance(doc, dict) else ():
            value = doc.get(name)
            assert value is None or (isinstance(value, str) and TOKEN_PATTERN.match(value)), (name, text)
    # Unparseable or non-object text, missing text and text without PII are returned byte for byte.
    for n in (14, 15, 16, 20):
        assert got_texts[n] == ROWS[n][2]


def test_plain_documents_keep_their_bytes_except_the_swapped_values(home: Path) -> None:
    """The vectorised path edits the text in place (no re-serialisation) and needs no JSON parse in Python:
    spacing, key order and number spelling survive, which the row-by-row path would normalise."""
    rows = [
        ("t_a", "c1", '{ "email":"x@example.com", "price": 1.10, "full_name":"Ann" }'),
        ("t_a", "c2", '{"full_name":"山田 太郎","big":123456789012345678901234567890}'),
    ]
    key = get_keystore().get_or_create_key("t_a")
    out = pseudonymise_batch(_table(rows), pii_fields=PII, recoverable_fields=RECOVERABLE).column("properties")
    assert out.to_pylist() == [
        f'{{ "email":"{pseudonym(key, "x@example.com")}", "price": 1.10, "full_name":"{pseudonym(key, "Ann")}" }}',
        f'{{"full_name":"{pseudonym(key, "山田 太郎")}","big":123456789012345678901234567890}}',
    ]


@pytest.mark.parametrize("copies", [1, 3])
def test_large_batches_agree_with_the_reference(home: Path, copies: int) -> None:
    """The same rows repeated across tenants (many distinct and repeated values) still agree row by row."""
    rows = [
        (f"t_{i % 4}", f"c{i}", text.replace("@example", f"+{i % 7}@example") if text else text)
        for i, (_, _, text) in enumerate(ROWS * 20 * copies)
    ]
    pending = PendingPiiRows()
    out = pseudonymise_batch(_table(rows), pii_fields=PII, recoverable_fields=RECOVERABLE, pending=pending)
    want_texts, want_rows = _reference(rows)
    for got, want in zip(out.column("properties").to_pylist(), want_texts, strict=True):
        assert _same_document(got, want), (got, want)
    assert {(e["tenant_id"], e["token"]): (e["field"], e["customer_id"], e["raw"]) for e in pending.entries} == (
        want_rows
    )


def test_a_batch_of_many_new_tenants_creates_their_keys_in_one_keystore_commit(home: Path) -> None:
    tenants = [f"t_new{i}" for i in range(500)]
    batch = pa.table({"tenant_id": tenants * 2, "customer_id": ["c1"] * 1000,
                      "email": [f"{t}@example.com" for t in tenants] * 2})
    store = get_keystore()
    statements: list[str] = []
    store._connect().set_trace_callback(statements.append)  # type: ignore[attr-defined]
    out = pseudonymise_batch(batch, pii_fields=["email"], keystore=store)
    store._connect().set_trace_callback(None)  # type: ignore[attr-defined]
    assert statements.count("COMMIT") == 1  # not one per new tenant
    assert out.column("email")[0].as_py() == pseudonym(store.get_key("t_new0"), "t_new0@example.com")
