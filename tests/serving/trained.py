"""One small real lake and a promoted churn champion for the whole serving test session.

The lake is built by the demo's own stage functions (provision, simulate + land, dbt, features) on a small
simulation, then `models.churn.train_churn` and `models.registry.promote_if_better` run for real. Modules
point `MLFLOW_TRACKING_URI` at this registry (or at a copy of it when they move aliases).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.serving.api_world import isolated_home

CHURN = "shironzi-churn"


@dataclass(frozen=True)
class TrainedModel:
    home: Path
    tracking_uri: str
    version: str
    run_id: str
    demo_tenants: dict[str, str]  # slug -> tenant id (their online features are real)

    def copy_registry(self, target_dir: Path) -> str:
        """A private copy of the MLflow database (artifacts stay shared, read-only): a tracking URI."""
        source = Path(self.tracking_uri.removeprefix("sqlite:///"))
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / "mlflow.db"
        shutil.copy2(source, target)
        return f"sqlite:///{target}"


def train_small_champion(root: Path, *, days: int = 100, customers: int = 300) -> TrainedModel:
    from models.churn import train_churn
    from models.registry import promote_if_better
    from models.tracking import tracking_uri
    from orchestration.demo import (
        DemoState,
        build_and_materialize_features,
        build_curated_layer,
        provision_demo_tenants,
        simulate_and_land_files,
    )
    from shironzi.tenancy import get_registry

    with isolated_home(root) as settings:
        state = DemoState(settings=settings, seed=7, days=days, customers=customers)
        for stage_fn in (provision_demo_tenants, simulate_and_land_files, build_curated_layer,
                         build_and_materialize_features):
            stage_fn(state)
        result = train_churn(settings=settings, seed=0)
        decision = promote_if_better(CHURN, settings=settings)
        assert decision.promoted, decision.reason
        registry = get_registry(settings)
        tenants = {registry.get_tenant(tid).slug: tid for tid in state.tenant_ids}
        assert result.model_version is not None
        return TrainedModel(settings.home, tracking_uri(settings), str(result.model_version), result.run_id, tenants)
