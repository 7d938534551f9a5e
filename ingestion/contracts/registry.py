"""Look-ups over the shipped contracts: by industry (latest version) or by `industry@vN` reference."""

from __future__ import annotations

from functools import cache

import polars as pl

from ingestion.contracts.definitions import SHIPPED_CONTRACTS
from ingestion.contracts.model import Contract, contract_from_dict
from shironzi.errors import InvalidInputError


@cache
def _contracts() -> dict[str, Contract]:
    built = [contract_from_dict(data) for data in SHIPPED_CONTRACTS]
    return {c.ref: c for c in built}


def list_contracts() -> list[Contract]:
    """Every shipped contract, every version."""
    return sorted(_contracts().values(), key=lambda c: (c.industry, c.version))


def industries() -> list[str]:
    """Industries that have at least one contract."""
    return sorted({c.industry for c in _contracts().values()})


def get_contract(ref: str) -> Contract:
    """A contract by `industry@vN`, or the latest version of an industry when given just `industry`."""
    contracts = _contracts()
    if "@" in ref:
        if ref not in contracts:
            raise InvalidInputError(
                f"unknown contract {ref!r}; known: {', '.join(sorted(contracts))}", contract=ref
            )
        return contracts[ref]
    versions = [c for c in contracts.values() if c.industry == ref]
    if not versions:
        raise InvalidInputError(
            f"no contract for industry {ref!r}; known: {', '.join(industries())}", industry=ref
        )
    return max(versions, key=lambda c: c.version)


def pii_fields(industry: str, *, version: int | None = None) -> list[str]:
    """Names of the properties marked PII in an industry's contract (latest version unless given)."""
    contract = get_contract(f"{industry}@v{version}" if version is not None else industry)
    return sorted({p.name for et in contract.event_types for p in et.properties if p.pii})


def recoverable_pii_fields(industry: str, *, version: int | None = None) -> list[str]:
    """The PII properties whose raw value the PII table keeps, encrypted (the others are never recoverable)."""
    contract = get_contract(f"{industry}@v{version}" if version is not None else industry)
    return sorted({p.name for et in contract.event_types for p in et.properties if p.pii and p.recoverable})


def phi_fields(industry: str, *, version: int | None = None) -> list[str]:
    """The PHI properties landing encrypts deterministically (PHI that is also PII is hashed as PII instead)."""
    contract = get_contract(f"{industry}@v{version}" if version is not None else industry)
    return sorted({p.name for et in contract.event_types for p in et.properties if p.phi and not p.pii})


def phi_columns(industry: str, *, version: int | None = None) -> list[str]:
    """The canonical columns (e.g. `customer_id`) an industry's contract declares as PHI."""
    contract = get_contract(f"{industry}@v{version}" if version is not None else industry)
    return list(contract.phi_columns)


@cache
def event_type_table() -> pl.DataFrame:
    """One row per (contract, event_type): `contract, industry, event_type, carries_amount`."""
    rows = [
        {
            "contract": c.ref,
            "industry": c.industry,
            "event_type": et.name,
            "carries_amount": et.carries_amount,
        }
        for c in list_contracts()
        for et in c.event_types
    ]
    return pl.DataFrame(
        rows,
        schema={
            "contract": pl.String,
            "industry": pl.String,
            "event_type": pl.String,
            "carries_amount": pl.Boolean,
        },
    )


@cache
def property_table() -> pl.DataFrame:
    """One row per (contract, event_type, property): `contract, event_type, property, type, required`."""
    rows = [
        {"contract": c.ref, "event_type": et.name, "property": p.name, "type": p.type, "required": p.required}
        for c in list_contracts()
        for et in c.event_types
        for p in et.properties
    ]
    return pl.DataFrame(
        rows,
        schema={
            "contract": pl.String,
            "event_type": pl.String,
            "property": pl.String,
            "type": pl.String,
            "required": pl.Boolean,
        },
    )


def latest_contract_refs() -> dict[str, str]:
    """industry -> the reference of its latest contract."""
    return {industry: get_contract(industry).ref for industry in industries()}
