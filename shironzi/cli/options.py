"""Parsing of option values that several command groups share."""

from __future__ import annotations

from datetime import date

from shironzi.errors import InvalidInputError


def parse_day(value: str | None, *, option: str) -> date | None:
    """A `YYYY-MM-DD` option value as a date (None stays None); anything else is one readable error."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"{option} must be YYYY-MM-DD, got {value!r}") from exc
