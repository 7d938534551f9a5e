"""What a contract says: the event types of one industry, the properties each requires and their types,
which properties are PII, and which event types carry `amount`/`currency`.

Contracts are declared as plain data (`contract_from_dict`), so the same shape can come from YAML later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from shironzi.errors import ConfigurationError

PropertyType = Literal["string", "int", "float", "bool", "timestamp"]
PROPERTY_TYPES: tuple[str, ...] = get_args(PropertyType)
PHI_COLUMNS = frozenset({"customer_id"})
"""Canonical columns a contract may declare as PHI: tenant_id, event_id and the rest scope or order rows."""


@dataclass(frozen=True)
class PropertySpec:
    """One property of an event type. `recoverable` PII is kept encrypted in the PII table
    (`shironzi.privacy`); the rest is only ever stored hashed or dropped. `phi` marks protected health
    information (HIPAA): landing encrypts it deterministically under the tenant's PHI key
    (`shironzi.privacy.phi`), unless it is also PII, which is hashed instead."""

    name: str
    type: PropertyType
    required: bool = True
    pii: bool = False
    recoverable: bool = False
    phi: bool = False


@dataclass(frozen=True)
class EventTypeSpec:
    """One event type: its properties and whether it carries a money `amount` with a `currency`."""

    name: str
    properties: tuple[PropertySpec, ...] = ()
    carries_amount: bool = False
    description: str = ""

    def property(self, name: str) -> PropertySpec:
        for spec in self.properties:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True)
class Contract:
    """A versioned industry contract, referred to as `industry@vN` (e.g. `ecommerce@v1`)."""

    industry: str
    version: int
    event_types: tuple[EventTypeSpec, ...]
    terminal_event: str  # the event a customer emits when leaving (account_closed, ...)
    signup_event: str  # the event a customer emits when joining (customer_signed_up, ...)
    phi_columns: tuple[str, ...] = ()  # canonical columns holding PHI (the patient's `customer_id`)

    @property
    def ref(self) -> str:
        return f"{self.industry}@v{self.version}"

    @property
    def event_type_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.event_types)

    def event_type(self, name: str) -> EventTypeSpec:
        for spec in self.event_types:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _property_from_dict(owner: str, name: str, raw: str | Mapping[str, Any]) -> PropertySpec:
    spec = {"type": raw} if isinstance(raw, str) else dict(raw)
    unknown = set(spec) - {"type", "required", "pii", "recoverable", "phi"}
    if unknown:
        raise ConfigurationError(f"contract {owner}: property {name!r} has unknown keys {sorted(unknown)}")
    if spec.get("type") not in PROPERTY_TYPES:
        raise ConfigurationError(
            f"contract {owner}: property {name!r} has type {spec.get('type')!r}; "
            f"expected one of {PROPERTY_TYPES}"
        )
    if spec.get("recoverable") and not spec.get("pii"):
        raise ConfigurationError(f"contract {owner}: property {name!r} is recoverable but not marked pii")
    return PropertySpec(
        name=name,
        type=cast(PropertyType, spec["type"]),
        required=bool(spec.get("required", True)),
        pii=bool(spec.get("pii", False)),
        recoverable=bool(spec.get("recoverable", False)),
        phi=bool(spec.get("phi", False)),
    )


def contract_from_dict(data: Mapping[str, Any]) -> Contract:
    """Build a contract from declarative data; refuses unknown keys and dangling references.

    Shape::

        {"industry": "ecommerce", "version": 1, "signup_event": "...", "terminal_event": "...",
         "phi_columns": ["customer_id"],  # optional: canonical columns that are PHI
         "event_types": {"order_placed": {"amount": True, "properties": {
             "order_id": "string",
             "shipping_postcode": {"type": "string", "pii": True, "recoverable": False}}}}}
    """
    unknown = set(data) - {"industry", "version", "event_types", "signup_event", "terminal_event", "phi_columns"}
    if unknown:
        raise ConfigurationError(f"contract has unknown keys {sorted(unknown)}")
    owner = f"{data['industry']}@v{data['version']}"
    phi_columns = tuple(data.get("phi_columns", ()))
    if not set(phi_columns) <= PHI_COLUMNS:
        raise ConfigurationError(
            f"contract {owner}: phi_columns {sorted(set(phi_columns) - PHI_COLUMNS)} cannot be protected; "
            f"expected some of {sorted(PHI_COLUMNS)}"
        )
    event_types: list[EventTypeSpec] = []
    for name, body in data["event_types"].items():
        extra = set(body) - {"amount", "properties", "description"}
        if extra:
            raise ConfigurationError(
                f"contract {owner}: event type {name!r} has unknown keys {sorted(extra)}"
            )
        props = tuple(_property_from_dict(owner, p, raw) for p, raw in body.get("properties", {}).items())
        event_types.append(
            EventTypeSpec(
                name=name,
                properties=props,
                carries_amount=bool(body.get("amount", False)),
                description=str(body.get("description", "")),
            )
        )
    contract = Contract(
        industry=str(data["industry"]),
        version=int(data["version"]),
        event_types=tuple(event_types),
        terminal_event=str(data["terminal_event"]),
        signup_event=str(data["signup_event"]),
        phi_columns=phi_columns,
    )
    for special in (contract.terminal_event, contract.signup_event):
        if special not in contract.event_type_names:
            raise ConfigurationError(f"contract {owner}: {special!r} is not one of its event types")
    return contract
