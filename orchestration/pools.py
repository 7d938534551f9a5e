"""Compute isolation in Airflow: one pool per plan for per-tenant work, one pool for the dedicated tenants' own
builds, and priority weights by plan, so a burst of free tenants' tasks can neither take the slots of the paying
plans nor jump ahead of them in the queue.

`airflow_config/pools.json` is what `airflow pools import` loads (the single source of the pools and their
slots): `ensure_airflow_pools` runs it for `shironzi airflow ...` and the tests, and the airflow-init job of
docker-compose and Kubernetes runs it after `airflow db migrate`. DAG files take the names and weights from
here (a light import: no Airflow, no registry).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POOLS_FILE = Path(__file__).resolve().parent / "airflow_config" / "pools.json"
PLANS = ("free", "standard", "enterprise")  # the catalogue's plans (tests/orchestration checks they agree)
PLAN_POOLS: dict[str, str] = {plan: f"shironzi_{plan}" for plan in PLANS}
DEDICATED_POOL = "shironzi_dedicated"
PRIORITY_WEIGHTS: dict[str, int] = {"free": 1, "standard": 5, "enterprise": 10, "dedicated": 10}


def pool_definitions() -> dict[str, dict[str, Any]]:
    """The pools as `airflow pools import` reads them: name -> slots, description, include_deferred."""
    return json.loads(POOLS_FILE.read_text())  # type: ignore[no-any-return]


def plan_task(plan: str) -> dict[str, Any]:
    """The task arguments of per-tenant work for one plan's tenants: its pool and its priority weight."""
    return {"pool": PLAN_POOLS[plan], "priority_weight": PRIORITY_WEIGHTS[plan]}


def dedicated_task() -> dict[str, Any]:
    """The task arguments of a dedicated tenant's own build."""
    return {"pool": DEDICATED_POOL, "priority_weight": PRIORITY_WEIGHTS["dedicated"]}
