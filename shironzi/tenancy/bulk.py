"""Bulk tenant import files (CSV, JSON array or JSON Lines): read, then validate every row before writing."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shironzi.errors import InvalidInputError, ShironziError
from shironzi.tenancy import catalog
from shironzi.tenancy.records import ProvisionSpec

ImportFormat = Literal["csv", "json", "jsonl"]
REQUIRED_FIELDS = ("slug", "name", "industry")
OPTIONAL_FIELDS = ("region", "plan", "placement")
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True, slots=True)
class RawRow:
    line: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str


class ImportRejectedError(InvalidInputError):
    """A bulk import with at least one bad row: nothing was written."""

    code = "import_rejected"

    def __init__(self, path: str, errors: list[RowError]) -> None:
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:MAX_REPORTED_ERRORS])
        more = f"; and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        super().__init__(
            f"import of {path} rejected, nothing was written: {len(errors)} bad row(s): {shown}{more}",
            path=path,
            errors=[{"line": e.line, "message": e.message} for e in errors],
        )
        self.errors = errors


def detect_format(path: Path) -> ImportFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    raise InvalidInputError(
        f"cannot tell the format of {path.name!r}: use a .csv, .json or .jsonl file", path=str(path)
    )


def read_rows(path: Path, *, fmt: ImportFormat | None = None) -> list[RawRow]:
    """Every row of an import file with the line it starts on (structural errors name their line)."""
    if not path.is_file():
        raise InvalidInputError(f"import file {str(path)!r} does not exist", path=str(path))
    fmt = fmt or detect_format(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"import file {path.name!r} is not UTF-8 text: {exc.reason}", path=str(path)
        ) from exc
    if fmt == "csv":
        return list(_csv_rows(path, text))
    if fmt == "jsonl":
        return list(_jsonl_rows(path, text))
    return list(_json_array_rows(path, text))


def _csv_rows(path: Path, text: str) -> Iterator[RawRow]:
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInputError(f"import file {path.name!r} is empty", path=str(path)) from None
    header = [h.strip().lower() for h in header]
    _check_columns(path, header, line=1)
    line = reader.line_num + 1
    for cells in reader:
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ImportRejectedError(
                str(path), [RowError(start, f"expected {len(header)} columns, found {len(cells)}")]
            )
        yield RawRow(start, dict(zip(header, cells, strict=True)))


def _check_columns(path: Path, columns: Iterable[str], *, line: int) -> None:
    columns = list(columns)
    known = set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
    unknown = [c for c in columns if c not in known]
    missing = [c for c in REQUIRED_FIELDS if c not in columns]
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if len(set(columns)) != len(columns):
        problems.append("repeated column names")
    if problems:
        raise ImportRejectedError(
            str(path),
            [
                RowError(
                    line, "; ".join(problems) + f" (expected {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)})"
                )
            ],
        )


def _object_row(path: Path, value: Any, line: int) -> RawRow:
    if not isinstance(value, dict):
        raise ImportRejectedError(str(path), [RowError(line, "each row must be a JSON object")])
    _check_columns(path, [str(k) for k in value], line=line)
    return RawRow(line, value)


def _jsonl_rows(path: Path, text: str) -> Iterator[RawRow]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportRejectedError(str(path), [RowError(number, f"invalid JSON: {exc.msg}")]) from None
        yield _object_row(path, value, number)


def _json_array_rows(path: Path, text: str) -> Iterator[RawRow]:
    decoder = json.JSONDecoder()
    pos, line = 0, 1

    def skip_ws(i: int) -> int:
        nonlocal line
        while i < len(text) and text[i] in " \t\r\n":
            line += text[i] == "\n"
            i += 1
        return i

    pos = skip_ws(pos)
    if pos >= len(text) or text[pos] != "[":
        raise ImportRejectedError(str(path), [RowError(line, "a .json import must be an array of objects")])
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        start_line = line
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ImportRejectedError(str(path), [RowError(exc.lineno, f"invalid JSON: {exc.msg}")]) from None
        line += text.count("\n", pos, end)
        yield _object_row(path, value, start_line)
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if skip_ws(pos + 1) != len(text):
                raise ImportRejectedError(str(path), [RowError(line, "unexpected content after the array")])
            return
        raise ImportRejectedError(str(path), [RowError(line, "expected ',' or ']' between rows")])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return value  # a wrong type: the checks below reject it with its field name
    value = value.strip()
    return value or None


def validate_rows(
    path: str,
    rows: list[RawRow],
    *,
    regions: list[str],
    default_region: str,
    existing_slugs: Callable[[list[str]], set[str]],
    progress: Callable[[int], None] | None = None,
) -> list[ProvisionSpec]:
    """Check every row (fields, duplicates within the file and against the registry); all or nothing."""
    errors: list[RowError] = []
    specs: list[ProvisionSpec] = []
    first_line_of_slug: dict[str, int] = {}
    for index, row in enumerate(rows):
        f = row.fields
        try:
            slug = catalog.check_slug(_text(f.get("slug")))
            name = catalog.check_name(_text(f.get("name")))
            industry = catalog.check_industry(_text(f.get("industry")))
            region = catalog.check_region(_text(f.get("region")) or default_region, regions)
            plan = catalog.check_plan(_text(f.get("plan")) or "standard")
            placement_raw = _text(f.get("placement"))
            placement = (
                catalog.check_placement(placement_raw)
                if placement_raw
                else catalog.default_placement(plan=plan, industry=industry)
            )
        except ShironziError as exc:
            errors.append(RowError(row.line, exc.message))
            continue
        if slug in first_line_of_slug:
            errors.append(RowError(row.line, f"slug {slug!r} repeats line {first_line_of_slug[slug]}"))
            continue
        first_line_of_slug[slug] = row.line
        specs.append(ProvisionSpec(slug, name, industry, region, plan, placement, line=row.line))
        if progress and index % 5000 == 4999:
            progress(5000)
    if not rows:
        errors.append(RowError(1, "the file holds no rows"))
    taken = existing_slugs(list(first_line_of_slug))
    errors.extend(RowError(first_line_of_slug[s], f"slug {s!r} already exists") for s in sorted(taken))
    if errors:
        errors.sort(key=lambda e: e.line)
        raise ImportRejectedError(path, errors)
    return specs
