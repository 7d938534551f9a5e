"""A small metered lake: two pooled tenants and a dedicated one whose simulated events were landed through the
real batch connector today, so that the usage of today can be checked against what was landed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class MeteredLake:
    pooled_a: Any
    pooled_b: Any
    dedicated: Any
    landed: dict[str, int]  # tenant id -> events the batch connector landed


def land_simulated_tenants(landing: Path) -> MeteredLake:
    """Provision the three tenants and land 14 days of their simulated events (one `ingest_files` run)."""
    from ingestion.batch import ingest_files
    from ingestion.synthetic import simulate, write_landing_files
    from tests.ingestion._fixtures import provision

    a, b, c = provision([("pool-a", "ecommerce", "standard"), ("pool-b", "ecommerce", "free"),
                         ("own-c", "ecommerce", "enterprise")], placement={"own-c": "dedicated"})
    sim = simulate([(t.id, t.industry) for t in (a, b, c)], customers=30, days=14, seed=5, bad_share=0.0)
    write_landing_files(sim, landing, fmt="jsonl")
    result = ingest_files(landing, check_quality=False)
    assert result.totals.landed == sim.events.height
    landed = dict(sim.events.group_by("tenant_id").len().iter_rows())
    return MeteredLake(a, b, c, landed)
