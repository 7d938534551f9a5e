"""Feature definitions as code: entities, features and feature views.

A `FeatureView` names an entity, a source, a Spark SQL transformation (run by the offline pipeline over the
temp views described in `feature_store.views`), a TTL and typed features. Its offline Delta table is
`{lake}/{region}/features/{view.table}`; the table name carries the version, so a changed definition
starts a new table instead of mixing two meanings in one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from shironzi.errors import ConfigurationError, FeatureNotFoundError

FeatureDtype = Literal["int64", "float64"]
FEATURE_TIMESTAMP = "feature_timestamp"
SNAPSHOT_DATE = "snapshot_date"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ConfigurationError(f"invalid {kind} name {value!r}: use lowercase letters, digits and '_'")
    return value


@dataclass(frozen=True)
class Entity:
    """What features describe, and the columns that identify one (always starting with tenant_id)."""

    name: str
    join_keys: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("entity", self.name)
        if not self.join_keys or self.join_keys[0] != "tenant_id":
            raise ConfigurationError(f"entity {self.name!r}: join keys must start with tenant_id")


CUSTOMER = Entity("customer", ("tenant_id", "customer_id"), "A tenant's customer (patient, student ...).")
TENANT = Entity("tenant", ("tenant_id",), "A tenant as a whole: context for its customers' features.")
ENTITIES: dict[str, Entity] = {e.name: e for e in (CUSTOMER, TENANT)}


@dataclass(frozen=True)
class Feature:
    """One typed feature column."""

    name: str
    dtype: FeatureDtype
    description: str

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if self.dtype not in ("int64", "float64"):
            raise ConfigurationError(f"feature {self.name!r}: unsupported dtype {self.dtype!r}")


@dataclass(frozen=True)
class FeatureView:
    """A group of features computed together for one entity, as of each snapshot date."""

    name: str
    entity: Entity
    features: tuple[Feature, ...]
    transformation: str
    """Spark SQL selecting the entity keys, snapshot_date, feature_timestamp and every feature."""
    ttl: timedelta
    owner: str
    description: str
    source: str = "bronze.events"
    version: int = 1
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_name("feature view", self.name)
        if not self.features:
            raise ConfigurationError(f"feature view {self.name!r} has no features")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"feature view {self.name!r} repeats a feature name")
        if self.ttl <= timedelta(0):
            raise ConfigurationError(f"feature view {self.name!r}: ttl must be positive")
        if self.version < 1:
            raise ConfigurationError(f"feature view {self.name!r}: version starts at 1")

    @property
    def table(self) -> str:
        """The offline Delta table name (versioned)."""
        return f"{self.name}_v{self.version}"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def join_keys(self) -> tuple[str, ...]:
        return self.entity.join_keys

    @property
    def columns(self) -> list[str]:
        """Every column of the offline table, in order."""
        return [*self.join_keys, SNAPSHOT_DATE, FEATURE_TIMESTAMP, *self.feature_names]

    def feature(self, name: str) -> Feature:
        for item in self.features:
            if item.name == name:
                return item

        raise FeatureNotFoundError(f"feature view {self.name!r} has no feature {name!r}", view=self.name)
