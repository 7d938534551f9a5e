"""The customer-base model's outputs as churn features, point in time, and the risk bands of a tenant.

The feature store gives every customer row its repeat-purchase summary as of the row's date
(`customer_repeat_purchases`: x, t_x, T). A BG/NBD model is fitted per tenant on the customer base of a
date and gives each row `cb_p_alive` and `cb_expected_purchases` over the tenant's horizon. A row dated s
only uses a fit on rows dated s or earlier (refits every `REFIT_EVERY` dates), so no feature sees the future.
The fitted parameters of each tenant's newest date travel with the model (`customer_base.json`): online
inference fills the two features from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.churn.customer_base import BGNBD, MIN_CUSTOMERS, fit_bgnbd
from models.common import group_rows
from shironzi.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

DERIVED_VIEW = "customer_base"
DERIVED_FEATURES = ("cb_p_alive", "cb_expected_purchases")
INPUTS = ("repeat_purchase_days", "purchase_span_days", "days_since_first_purchase")
DEFAULT_HORIZON_DAYS = 30
REFIT_EVERY = 4  # dates between refits of a tenant's model (weekly dates: every four weeks)
FIT_SAMPLE = 3_000  # customers a fit reads at most (deterministic sample)


@dataclass
class CustomerBase:
    """Per tenant: the newest BG/NBD fit and the horizon its expected purchases cover."""

    models: dict[str, BGNBD] = field(default_factory=dict)
    horizons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"models": {t: m.as_dict() for t, m in self.models.items()}, "horizons": dict(self.horizons)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CustomerBase:
        return cls({t: BGNBD.from_dict(m) for t, m in values.get("models", {}).items()},
                   {t: int(h) for t, h in values.get("horizons", {}).items()})

    def horizon(self, tenant_id: str) -> int:
        return self.horizons.get(tenant_id, DEFAULT_HORIZON_DAYS)


def _inputs(x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.isfinite(x) & np.isfinite(t_x) & np.isfinite(t) & (x >= 0)


def customer_base_outputs(model: BGNBD | None, horizon_days: int, x: np.ndarray, t_x: np.ndarray,
                          t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(alive), expected purchases over the horizon); NaN where the inputs or the model are missing."""
    p_alive = np.full(x.shape, np.nan)
    expected = np.full(x.shape, np.nan)
    usable = _inputs(x, t_x, t)
    if model is not None and usable.any():
        p_alive[usable] = model.p_alive(x[usable], t_x[usable], t[usable])
        expected[usable] = model.expected_purchases(horizon_days, x[usable], t_x[usable], t[usable])
    return p_alive, expected


def _fit(x: np.ndarray, t_x: np.ndarray, t: np.ndarray, seed: int) -> BGNBD | None:
    usable = np.flatnonzero(_inputs(x, t_x, t))
    if usable.size < MIN_CUSTOMERS:
        return None
    if usable.size > FIT_SAMPLE:
        usable = np.sort(np.random.default_rng(seed).choice(usable, FIT_SAMPLE, replace=False))
    try:
        return fit_bgnbd(x[usable], t_x[usable], t[usable])
    except InvalidInputError:
        return None


def add_customer_base_features(
    table: pa.Table, *, date_column: str, horizons: Mapping[str, int] | None = None,
    fitted: CustomerBase | None = None,
) -> tuple[pa.Table, CustomerBase]:
    """`table` (tenant_id, `date_column` and the three INPUTS) with the DERIVED_FEATURES appended.

    Without `fitted`, fits per tenant on each date's rows (point in time, see the module docstring); with it,
    uses its parameters (online-like scoring with a trained model's fits). Returns the table and the newest fit
    of each tenant."""
    import pyarrow as pa
    import pyarrow.compute as pc

    horizons = dict(horizons or {})
    if not set(INPUTS) <= set(table.column_names):  # a model trained before the repeat-purchase features
        return table, CustomerBase(horizons=horizons)
    columns = {name: pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False) for name in INPUTS}
    x, t_x, t = (np.asarray(columns[name], dtype=np.float64) for name in INPUTS)
    tenants = np.asarray(table.column("tenant_id").to_pylist(), dtype=object)
    dates = np.asarray(pc.cast(table.column(date_column), pa.string()).to_pylist(), dtype=object)
    p_alive = np.full(table.num_rows, np.nan)
    expected = np.full(table.num_rows, np.nan)
    newest = CustomerBase(horizons=horizons)
    for tenant_id, rows in group_rows(tenants).items():
        horizon = horizons.get(tenant_id, fitted.horizon(tenant_id) if fitted else DEFAULT_HORIZON_DAYS)
        model: BGNBD | None = fitted.models.get(tenant_id) if fitted else None
        for number, on_day in enumerate(group_rows(dates[rows]).values()):
            at = rows[on_day]
            if fitted is None and (number % REFIT_EVERY == 0 or model is None):
                model = _fit(x[at], t_x[at], t[at], seed=number) or model
            p_alive[at], expected[at] = customer_base_outputs(model, horizon, x[at], t_x[at], t[at])
        if model is not None:
            newest.models[tenant_id] = model
            newest.horizons[tenant_id] = horizon
    out = table
    for name, values in zip(DERIVED_FEATURES, (p_alive, expected), strict=True):
        array = pa.array(values, pa.float64(), mask=~np.isfinite(values))
        out = out.set_column(out.column_names.index(name), name, array) if name in out.column_names \
            else out.append_column(name, array)
    return out, newest


def fill_customer_base_columns(x: np.ndarray, names: Sequence[str], base: CustomerBase | None,
                               tenant_id: str) -> None:
    """Fill the missing DERIVED_FEATURES values of a feature matrix in place from its INPUTS columns (online rows:
    the online store holds the inputs, not the derived values)."""
    if base is None or not all(n in names for n in (*INPUTS, *DERIVED_FEATURES)):
        return
    index = {n: names.index(n) for n in (*INPUTS, *DERIVED_FEATURES)}
    raw = [x[:, index[n]].astype(np.float64) for n in INPUTS]
    p_alive, expected = customer_base_outputs(base.models.get(tenant_id), base.horizon(tenant_id), *raw)
    for name, values in (("cb_p_alive", p_alive), ("cb_expected_purchases", expected)):
        column = x[:, index[name]]
        missing = np.isnan(column)  # values the caller gave are kept
        column[missing] = values[missing]
