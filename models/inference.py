"""Online churn inference for serving: the champion booster loaded natively, with per-tenant routing.

    predictor = load_churn_predictor()
    rows = get_online_features(tenant_id, ["c1"], predictor.feature_names)
    [prediction] = predictor.predict(tenant_id, rows)

Probabilities come from `inplace_predict` (no pyfunc, no DMatrix) through the isotonic calibrator; the top
three reasons come from XGBoost's per-feature contributions (`pred_contribs`, which needs one small DMatrix
per call). A tenant with a `champion_<tenant_id>` alias gets its dedicated model, every other tenant the
global `champion`. `refresh_if_changed()` re-reads the aliases and swaps the loaded models atomically.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.bands import RiskBand, risk_band
from models.common import CHAMPION, CHURN_MODEL, humanize_feature
from shironzi.errors import InvalidInputError, ModelUnavailableError
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np

    from models.churn.train import LoadedChurnModel

TOP_REASONS = 3


@dataclass(frozen=True)
class ChurnPrediction:
    probability: float
    risk_band: RiskBand
    reasons: list[dict[str, Any]]
    model_name: str
    model_version: str

    def as_dict(self) -> dict[str, Any]:
        return {"probability": self.probability, "risk_band": self.risk_band, "reasons": self.reasons,
                "model_name": self.model_name, "model_version": self.model_version}


@dataclass(frozen=True)
class _Loaded:
    """One consistent set of models: swapped as a whole on refresh."""

    aliases: dict[str, str]
    global_model: LoadedChurnModel
    tenant_models: dict[str, LoadedChurnModel] = field(default_factory=dict)


def _reasons(names: Sequence[str], contributions: np.ndarray) -> list[dict[str, Any]]:
    """The top features by absolute contribution (log-odds), largest first, with readable labels."""
    import numpy as np

    order = np.argsort(-np.abs(contributions), kind="stable")[:TOP_REASONS]
    return [{"feature": names[i], "label": humanize_feature(names[i]),
             "contribution": round(float(contributions[i]), 4)} for i in order if contributions[i] != 0.0]


class ChurnPredictor:
    """The churn champion (and dedicated tenant champions) ready to score feature rows."""

    def __init__(self, *, settings: Settings | None = None) -> None:
        self._settings = settings or get_settings()
        self._lock = threading.Lock()
        self._loaded = self._load(self._champion_aliases())

    # -- loading -------------------------------------------------------------------------------------
    def _champion_aliases(self) -> dict[str, str]:
        from models.registry import aliases, champion_aliases

        try:
            found = champion_aliases(aliases(CHURN_MODEL, settings=self._settings))
        except Exception as exc:  # noqa: BLE001 - the registry is down or unreadable
            raise ModelUnavailableError(f"the model registry is unavailable: {exc}") from exc
        if CHAMPION not in found:
            raise ModelUnavailableError(
                f"{CHURN_MODEL} has no champion yet: run `shironzi models train churn` and `shironzi models promote "
                f"{CHURN_MODEL}`")
        return found

    def _load(self, found: Mapping[str, str], previous: _Loaded | None = None) -> _Loaded:
        from models.churn.train import load_churn_version
        from models.registry import TENANT_CHAMPION_PREFIX

        cache: dict[str, LoadedChurnModel] = {}
        if previous is not None:
            cache[previous.global_model.version] = previous.global_model
            cache.update({m.version: m for m in previous.tenant_models.values()})

        def get(version: str) -> LoadedChurnModel:
            if version not in cache:
                try:
                    cache[version] = load_churn_version(version, settings=self._settings)
                except Exception as exc:  # noqa: BLE001
                    raise ModelUnavailableError(f"could not load {CHURN_MODEL} version {version}: {exc}") from exc
            return cache[version]

        global_model = get(found[CHAMPION])
        tenants = {alias[len(TENANT_CHAMPION_PREFIX):]: get(version) for alias, version in found.items()
                   if alias.startswith(TENANT_CHAMPION_PREFIX)}
        return _Loaded(dict(found), global_model, tenants)

    def refresh_if_changed(self) -> bool:
        """Re-read the champion aliases; load and swap in the new models when they moved."""
        found = self._champion_aliases()
        if found == self._loaded.aliases:
            return False
        with self._lock:
            if found == self._loaded.aliases:
                return False
            self._loaded = self._load(found, self._loaded)
        return True

    # -- properties ----------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The global champion's version."""
        return self._loaded.global_model.version

    @property
    def feature_names(self) -> list[str]:
        """Feature-store refs (`view:feature`) the model reads, for `get_online_features`."""
        return list(self._loaded.global_model.feature_refs)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._loaded.aliases)

    def model_for(self, tenant_id: str) -> LoadedChurnModel:
        """The tenant's dedicated champion when it has one, else the global champion."""
        loaded = self._loaded
        return loaded.tenant_models.get(tenant_id, loaded.global_model)

    # -- scoring -------------------------------------------------------------------------------------
    def matrix(self, rows: Sequence[Mapping[str, float | None]], model: LoadedChurnModel) -> np.ndarray:
        """Rows keyed by feature name (or `view:feature` ref) -> a float32 matrix (None/missing -> NaN)."""
        import numpy as np

        if isinstance(rows, Mapping):
            raise InvalidInputError("rows must be a list of feature mappings, not one mapping")
        out = np.full((len(rows), len(model.feature_names)), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InvalidInputError(f"row {i} is not a mapping of feature -> value")
            for j, (name, ref) in enumerate(zip(model.feature_names, model.feature_refs, strict=True)):
                value = row.get(name, row.get(ref))
                if value is None:
                    continue
                try:
                    number = float(value)
                except (TypeError, ValueError) as exc:
                    raise InvalidInputError(f"row {i}: feature {name!r} is not a number: {value!r}") from exc
                if math.isinf(number):
                    raise InvalidInputError(f"row {i}: feature {name!r} is infinite")
                out[i, j] = number
        return out

    def predict_matrix(self, tenant_id: str, x: np.ndarray, *, explain: bool = True) -> list[ChurnPrediction]:
        """Score a feature matrix (columns in `model_for(tenant_id).feature_names` order)."""
        import numpy as np

        model = self.model_for(tenant_id)
        if x.shape[0] == 0:
            return []
        probabilities = model.probabilities(x)
        reasons: list[list[dict[str, Any]]] = [[] for _ in range(x.shape[0])]
        if explain:
            import xgboost as xgb

            limit = (0, model.best_iteration + 1) if model.best_iteration is not None else (0, 0)
            contribs = model.booster.predict(xgb.DMatrix(x, feature_names=model.feature_names, nthread=1),
                                             pred_contribs=True, iteration_range=limit)
            reasons = [_reasons(model.feature_names, np.asarray(row[:-1])) for row in contribs]
        return [ChurnPrediction(round(float(p), 6), risk_band(float(p)), r, CHURN_MODEL, model.version)
                for p, r in zip(probabilities, reasons, strict=True)]

    def predict(self, tenant_id: str, rows: Sequence[Mapping[str, float | None]]) -> list[ChurnPrediction]:
        """Calibrated churn probability, risk band and top reasons for each feature row of one tenant."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise InvalidInputError("tenant_id must be a non-empty string")
        model = self.model_for(tenant_id)
        return self.predict_matrix(tenant_id, self.matrix(rows, model))


def reasons_json(reasons: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(reasons), separators=(",", ":"))


def load_churn_predictor(*, settings: Settings | None = None) -> ChurnPredictor:
    """The churn champion(s) from the registry; ModelUnavailableError when none is promoted yet."""
    return ChurnPredictor(settings=settings)
