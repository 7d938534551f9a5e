"""The churn model card (a run artifact) and the per-tenant churn definition recorded with each run.

The long form - definition, features, baselines, bands and the benchmark table - is docs/models/churn.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from models.common import CHURN_MODEL, finite

if TYPE_CHECKING:
    from models.churn.train import ChurnDataset, FittedChurn


CARD_TENANTS = 50  # tenants the card's definition table lists; windows.json and bands.json hold every tenant


def window_label(inactivity: int, horizon: int) -> str:
    return f"inactivity={inactivity}d,horizon={horizon}d"


def window_params(windows: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """MLflow params: how many tenants' labels were built with each (inactivity, horizon) window, one param per
    distinct window (a param per tenant made 100,000 params, which MLflow's store logs in quadratic time). Every
    tenant's own window is the run's `windows.json` (`window_artifact`)."""
    counts: dict[tuple[int, int], int] = {}
    for window in windows.values():
        counts[window] = counts.get(window, 0) + 1
    return {f"window_{inactivity}d_{horizon}d": f"{window_label(inactivity, horizon)}: {n} tenants"
            for (inactivity, horizon), n in sorted(counts.items())}


def window_artifact(windows: Mapping[str, tuple[int, int]]) -> dict[str, str]:
    """windows.json: each tenant's inactivity window and horizon (days) its labels were built with."""
    return {tenant_id: window_label(*window) for tenant_id, window in sorted(windows.items())}


def _window_lines(dataset: ChurnDataset, bands: Mapping[str, tuple[float, float]]) -> str:
    lines = []
    listed = sorted(dataset.windows.items())
    for tenant_id, (inactivity, horizon) in listed[:CARD_TENANTS]:
        fit = dataset.customer_base.models.get(tenant_id)
        base = (f"BG/NBD r={fit.r:.3g} alpha={fit.alpha:.3g} a={fit.a:.3g} b={fit.b:.3g}" if fit
                else "BG/NBD not fitted (too few repeat buyers)")
        medium, high = bands.get(tenant_id, (float("nan"), float("nan")))
        lines.append(f"| `{tenant_id}` | {inactivity} | {horizon} | {medium:.3f} / {high:.3f} | {base} |")
    if len(listed) > CARD_TENANTS:
        lines.append(f"| {len(listed) - CARD_TENANTS:,} more tenants | windows.json | | bands.json | "
                     "customer_base.json |")
    return "\n".join(lines) or "| - | - | - | - | - |"


def model_card(*, fitted: FittedChurn, dataset: ChurnDataset, run_id: str, tenants: int,
               dedicated: Mapping[str, Mapping[str, float]]) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(finite(fitted.metrics).items()))
    inputs = "\n".join(f"- `{uri}` @ Delta version {version}" for uri, version in dataset.inputs)
    available = dataset.rows_available or dataset.table.num_rows
    sampled = (f" (a sample of {available:,}, stratified by tenant-size bucket and label, under the cap "
               "SHIRONZI_MODEL_MAX_TRAINING_ROWS)") if available > dataset.table.num_rows else ""
    tenant_lines = "\n".join(
        f"- `{t}`: dedicated AUC {m.get('dedicated_auc', float('nan')):.4f} vs global "
        f"{m.get('global_auc', float('nan')):.4f} -> {'dedicated' if m.get('chosen') else 'global'}"
        for t, m in sorted(dedicated.items())) or "- none above the threshold"
    return f"""# Model card: {CHURN_MODEL}

- **Task**: probability that a customer has churned by the end of its tenant's horizon after a weekly snapshot.
  An ACTIVE customer (an event within the tenant's inactivity window) churns when it closes its account or
  stays silent for the whole window; a LAPSED customer (already silent that long) counts as churned when it
  does not come back within the horizon. Lapsed customers are modelled, not guessed: training rows hold them
  exactly as scoring meets them. Used by tenants with the `churn_prediction` module, shown as a percentage
  with a risk band per tenant (thresholds below) and the top three reasons. Long form: docs/models/churn.md.
- **Model**: XGBoost binary classifier (`hist`), best iteration {int(fitted.metrics.get('best_iteration', 0))},
  isotonic calibration fitted on the validation window. Run `{run_id}`.
- **Training data**: {dataset.table.num_rows:,} labelled snapshots of {tenants} tenants{sampled}; time split, no random
  split:
  - train: {fitted.train_dates[0]} .. {fitted.train_dates[-1]} ({int(fitted.metrics['train_rows']):,} rows)
  - validation (early stopping, calibration, band thresholds): {fitted.valid_dates[0]} .. {fitted.valid_dates[-1]}
  - holdout (the metrics below): {fitted.holdout_dates[0]} .. {fitted.holdout_dates[-1]}
- **Features**: {len(dataset.feature_names)} point-in-time features from the feature store (activity, lifecycle,
  trends, friction, industry signals, repeat purchases, tenant context) plus the customer-base model's
  P(alive) and expected purchases over the horizon (BG/NBD fitted per tenant on each date's customer base).
- **Exact inputs** (retraining from these versions with the same seed reproduces the metrics):
{inputs}

## Churn definition per tenant

Windows come from the tenant's `churn_prediction` settings, else from its cadence (the 90th percentile of
the gaps between its customers' active days, rounded up to weeks, clamped to 30..182 days).

| tenant | inactivity days | horizon days | band thresholds (medium / high) | customer-base model (newest fit, weeks) |
|---|---|---|---|---|
{_window_lines(dataset, fitted.bands)}

## Holdout metrics

| metric | value |
|---|---|
{rows}

## Dedicated tenant models

{tenant_lines}

## Caveats

Labels are observed churn; silent churners are only labelled once their silence is complete. Risk bands hold
about 50 % / 35 % / 15 % of a tenant's customers (low / medium / high) on the validation dates; a band holds
more only where customers tie on the same calibrated probability. Tenant-size buckets: small < 100 customers
<= medium < 1,000 <= large.
"""
