"""Table path rules: pooled vs dedicated placement, object-store roots, and rejected names."""

from __future__ import annotations

import pytest

from shironzi.errors import InvalidInputError
from shironzi.lake import LAYERS, platform_uri, table_uri


def test_pooled_and_dedicated_paths() -> None:
    assert (
        table_uri("/lake", layer="bronze", table="events", region="eu-west") == "/lake/eu-west/bronze/events"
    )
    assert (
        table_uri(
            "/lake/",
            layer="gold",
            table="fct_orders",
            region="us-east",
            placement="dedicated",
            tenant_id="acme",
        )
        == "/lake/us-east/tenants/acme/gold/fct_orders"
    )
    assert (
        table_uri("s3://bucket/lake", layer="features", table="churn", region="ap-south")
        == "s3://bucket/lake/ap-south/features/churn"
    )
    assert platform_uri("/lake", "manifests") == "/lake/_platform/manifests"
    assert set(LAYERS) == {"bronze", "silver", "gold", "features", "predictions", "quarantine", "audit"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layer": "platinum", "table": "events", "region": "eu-west"},
        {"layer": "bronze", "table": "../escape", "region": "eu-west"},
        {"layer": "bronze", "table": "Events", "region": "eu-west"},
        {"layer": "bronze", "table": "events", "region": "eu west"},
        {"layer": "bronze", "table": "", "region": "eu-west"},
        {"layer": "bronze", "table": "events", "region": "eu-west", "placement": "dedicated"},
        {
            "layer": "bronze",
            "table": "events",
            "region": "eu-west",
            "placement": "dedicated",
            "tenant_id": "a/b",
        },
        {"layer": "bronze", "table": "events", "region": "eu-west", "placement": "shared"},
    ],
)
def test_bad_names_are_rejected(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        table_uri("/lake", **kwargs)


def test_platform_parts_are_checked() -> None:
    with pytest.raises(InvalidInputError):
        platform_uri("/lake", "../etc")
