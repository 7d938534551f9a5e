"""Online churn inference for serving: the champion booster loaded natively, with per-tenant routing.

    predictor = load_churn_predictor()
    rows = get_online_features(tenant_id, ["c1"], predictor.feature_names)
    [prediction] = predictor.predict(tenant_id, rows)

Probabilities come from `inplace_predict` (no pyfunc, no DMatrix) through the isotonic calibrator; the top
three reasons come from XGBoost's per-feature contributions (`pred_contribs`, which needs one small DMatrix
per call). A tenant's model follows its release channel (`models.releases.routing`): a pinned version, else the
candidate of a rollout wave it is in, else its `champion_<tenant_id>` alias, else the global `champion`.
`refresh_if_changed()` re-reads the aliases and the routing and swaps the loaded models atomically.

Each loaded version gets a `_Scorer`: the iteration range, calibrator and readable labels bound once, and
(when the self-check passes) `_NativeXGBoost`, which calls the same libxgboost entry points as
`Booster.inplace_predict` and `Booster.predict(DMatrix, pred_contribs=True)` without the Python wrapper's
per-call work (input-type dispatch, feature-name round trips through C, ctypes array classes). On one row
that wrapper costs more than the trees; the numbers are the library's own, bit for bit (checked at load).
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.bands import RiskBand, risk_band
from models.churn.base_features import DERIVED_VIEW, fill_customer_base_columns
from models.churn.train import LoadedChurnModel, load_churn_version
from models.common import CHAMPION, CHURN_MODEL, humanize_feature
from models.releases.routing import RouteTable, route_table
from models.tracking import TENANT_CHAMPION_PREFIX, aliases, champion_aliases
from shironzi.errors import InvalidInputError, ModelUnavailableError
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry

if TYPE_CHECKING:
    import numpy as np

TOP_REASONS = 3

logger = logging.getLogger("shironzi.models.inference")


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
    scorers: dict[str, _Scorer] = field(default_factory=dict)  # version -> its bound scorer
    routes: RouteTable | None = None  # release channels and rollout waves
    routed: dict[str, LoadedChurnModel] = field(default_factory=dict)  # version -> model, for `routes`

    def model_for(self, tenant_id: str) -> LoadedChurnModel:
        routes = self.routes
        if routes is not None:
            version = routes.version_for(tenant_id)
            if version is not None:
                model = self.routed.get(version)
                if model is not None:
                    return model
        return self.tenant_models.get(tenant_id, self.global_model)


def _reasons(
    names: Sequence[str], contributions: np.ndarray, labels: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The top features by absolute contribution (log-odds), largest first, with readable labels."""
    import numpy as np

    order = np.argsort(-np.abs(contributions), kind="stable")[:TOP_REASONS]
    return [{"feature": names[i], "label": labels[i] if labels is not None else humanize_feature(names[i]),
             "contribution": round(float(contributions[i]), 4)} for i in order if contributions[i] != 0.0]


class _NativeXGBoost:
    """libxgboost's prediction calls for one booster, with their JSON arguments built once.

    `values(x)` is `booster.inplace_predict(x, iteration_range=r)` (XGBoosterPredictFromDense) and
    `contributions(x)` is `booster.predict(DMatrix(x, names, nthread=1), pred_contribs=True, iteration_range=r)`
    (XGDMatrixCreateFromDense + XGBoosterPredictFromDMatrix + XGDMatrixFree): the same C calls with the same
    arguments, minus the wrapper's per-call Python. It relies on xgboost internals (`xgboost.core._LIB`), so
    `bind` checks it against the public API on probe rows and returns None (public path) on any difference.
    """

    def __init__(self, booster: Any, iteration_range: tuple[int, int], feature_names: Sequence[str]) -> None:
        from xgboost._data_utils import array_interface
        from xgboost.core import _LIB, _check_call, c_bst_ulong

        self._booster = booster  # keeps the handle alive
        self._names = list(feature_names)
        self._handle = booster.handle
        self._lib = _LIB
        self._check = _check_call
        self._ulong = c_bst_ulong
        self._interface = array_interface
        begin, end = (int(v) for v in iteration_range)
        self._iteration_range = (begin, end)
        common = {"training": False, "iteration_begin": begin, "iteration_end": end}
        self._value_args = json.dumps(
            {"type": 0, **common, "missing": math.nan, "strict_shape": False, "cache_id": 0}).encode()
        self._contrib_args = json.dumps({"type": 2, **common, "strict_shape": False}).encode()
        self._dmatrix_args = json.dumps({"missing": math.nan, "nthread": 1, "data_split_mode": 0}).encode()

    @classmethod
    def bind(
        cls, booster: Any, iteration_range: tuple[int, int], feature_names: Sequence[str]
    ) -> _NativeXGBoost | None:
        """Native calls for `booster`, or None when they are unavailable or differ from the public API."""
        import numpy as np

        if booster.feature_names is not None and list(booster.feature_names) != list(feature_names):
            return None  # the public path's feature validation must keep refusing this model
        try:
            native = cls(booster, iteration_range, feature_names)
            import xgboost as xgb

            n_features = len(native._names)
            probe = np.full((4, n_features), np.nan, dtype=np.float32)
            probe[1] = 0.0
            probe[2] = np.linspace(-3.0, 50.0, n_features, dtype=np.float32)
            probe[3, ::2] = np.arange(0, n_features, 2, dtype=np.float32) * 7.5
            expected_values = booster.inplace_predict(probe, iteration_range=iteration_range)
            expected_contribs = booster.predict(xgb.DMatrix(probe, feature_names=native._names, nthread=1),
                                                pred_contribs=True, iteration_range=iteration_range)
            same = (np.array_equal(native.values(probe), expected_values, equal_nan=True)
                    and np.array_equal(native.contributions(probe), expected_contribs, equal_nan=True))
        except Exception as exc:  # noqa: BLE001 - another xgboost build: the public API is always right
            logger.info("native xgboost calls unavailable, using the Python API: %s", exc)
            return None
        if not same:
            logger.warning("native xgboost calls disagree with the Python API on probe rows: not used")
            return None
        return native

    @staticmethod
    def _usable(x: np.ndarray) -> bool:
        return x.ndim == 2 and x.dtype.char in "fd" and x.flags.c_contiguous and x.flags.aligned

    def _output(self, shape: Any, dims: Any, preds: Any) -> np.ndarray:
        import numpy as np

        dims_tuple = tuple(int(shape[i]) for i in range(dims.value))
        count = math.prod(dims_tuple)
        return np.frombuffer(ctypes.string_at(preds, count * 4), dtype=np.float32).reshape(dims_tuple)

    def values(self, x: np.ndarray) -> np.ndarray:
        if not self._usable(x):
            return self._booster.inplace_predict(x, iteration_range=self._iteration_range)  # type: ignore[no-any-return]
        preds = ctypes.POINTER(ctypes.c_float)()
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        self._check(self._lib.XGBoosterPredictFromDense(
            self._handle, self._interface(x), self._value_args, None,
            ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds)))
        return self._output(shape, dims, preds)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        if not self._usable(x):
            import xgboost as xgb

            return self._booster.predict(  # type: ignore[no-any-return]
                xgb.DMatrix(x, feature_names=self._names, nthread=1), pred_contribs=True,
                iteration_range=self._iteration_range)
        matrix = ctypes.c_void_p()
        self._check(self._lib.XGDMatrixCreateFromDense(self._interface(x), self._dmatrix_args,
                                                       ctypes.byref(matrix)))
        try:
            preds = ctypes.POINTER(ctypes.c_float)()
            shape = ctypes.POINTER(self._ulong)()
            dims = self._ulong()
            self._check(self._lib.XGBoosterPredictFromDMatrix(
                self._handle, matrix, self._contrib_args, ctypes.byref(shape), ctypes.byref(dims),
                ctypes.byref(preds)))
            return self._output(shape, dims, preds)
        finally:
            self._check(self._lib.XGDMatrixFree(matrix))


class _Scorer:
    """One loaded version, ready to score: iteration range, labels and (when available) native calls."""

    def __init__(self, model: LoadedChurnModel) -> None:
        self.model = model
        self.names = list(model.feature_names)
        self.labels = [humanize_feature(n) for n in self.names]
        self.iteration_range = (0, model.best_iteration + 1) if model.best_iteration is not None else (0, 0)
        self.native = _NativeXGBoost.bind(model.booster, self.iteration_range, self.names)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """`LoadedChurnModel.probabilities`: calibrated `inplace_predict`."""
        import numpy as np

        if self.native is None:
            return self.model.probabilities(x)
        return self.model.calibrator.apply(np.asarray(self.native.values(x), dtype=np.float64))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """XGBoost's per-feature contributions (log-odds), one row per input row, bias last."""
        if self.native is not None:
            return self.native.contributions(x)
        import xgboost as xgb

        return self.model.booster.predict(  # type: ignore[no-any-return]
            xgb.DMatrix(x, feature_names=self.names, nthread=1), pred_contribs=True,
            iteration_range=self.iteration_range)

    def reasons(self, contributions: np.ndarray) -> list[dict[str, Any]]:
        return _reasons(self.names, contributions, self.labels)


class ChurnPredictor:
    """The churn champion (and dedicated tenant champions) ready to score feature rows."""

    def __init__(self, *, settings: Settings | None = None) -> None:
        self._settings = settings or get_settings()
        self._lock = threading.Lock()
        self._loaded = self._load(self._champion_aliases(), self._routes(None))

    # -- loading -------------------------------------------------------------------------------------
    def _champion_aliases(self) -> dict[str, str]:
        try:
            found = champion_aliases(aliases(CHURN_MODEL, settings=self._settings))
        except Exception as exc:  # noqa: BLE001 - the registry is down or unreadable
            raise ModelUnavailableError(f"the model registry is unavailable: {exc}") from exc
        if CHAMPION not in found:
            raise ModelUnavailableError(
                f"{CHURN_MODEL} has no champion yet: run `shironzi models train churn` and `shironzi models promote "
                f"{CHURN_MODEL}`")
        return found

    def _routes(self, previous: RouteTable | None) -> RouteTable | None:
        """The churn routing from the registry's cached reads; the previous table while it is unreadable."""
        try:
            return route_table(get_registry(self._settings), CHURN_MODEL)
        except Exception as exc:  # noqa: BLE001 - degrade: keep routing as it was (or by the aliases alone)
            logger.warning("release routing unavailable, keeping the previous routing: %s", exc)
            return previous

    def _load(self, found: Mapping[str, str], routes: RouteTable | None, previous: _Loaded | None = None) -> _Loaded:
        cache: dict[str, LoadedChurnModel] = {}
        if previous is not None:
            cache[previous.global_model.version] = previous.global_model
            cache.update({m.version: m for m in previous.tenant_models.values()})
            cache.update(previous.routed)

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
        routed: dict[str, LoadedChurnModel] = {}
        for version in sorted(routes.versions()) if routes is not None else ():
            try:
                routed[version] = get(version)
            except ModelUnavailableError as exc:  # its tenants follow the champion aliases meanwhile
                logger.warning("routed version unavailable: %s", exc)
        known = previous.scorers if previous is not None else {}
        scorers: dict[str, _Scorer] = {}
        for model in (global_model, *tenants.values(), *routed.values()):
            if model.version not in scorers:
                kept = known.get(model.version)
                scorers[model.version] = kept if kept is not None and kept.model is model else _Scorer(model)
        return _Loaded(dict(found), global_model, tenants, scorers, routes, routed)

    def _same(self, found: Mapping[str, str], routes: RouteTable | None) -> bool:
        loaded = self._loaded
        return found == loaded.aliases and (routes.key if routes else None) == (
            loaded.routes.key if loaded.routes else None)

    def refresh_if_changed(self) -> bool:
        """Re-read the champion aliases and the release routing; load and swap in the new models when either
        moved."""
        found = self._champion_aliases()
        routes = self._routes(self._loaded.routes)
        if self._same(found, routes):
            return False
        with self._lock:
            if self._same(found, routes):
                return False
            self._loaded = self._load(found, routes, self._loaded)
        return True

    # -- properties ----------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The global champion's version."""
        return self._loaded.global_model.version

    @property
    def feature_names(self) -> list[str]:
        """Feature-store refs (`view:feature`) the model reads, for `get_online_features` (the customer-base
        model's outputs are derived from them, not stored)."""
        return [ref for ref in self._loaded.global_model.feature_refs if not ref.startswith(f"{DERIVED_VIEW}:")]

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._loaded.aliases)

    @property
    def routes(self) -> RouteTable | None:
        return self._loaded.routes

    def model_for(self, tenant_id: str) -> LoadedChurnModel:
        """The tenant's model through its channel: pinned, rollout candidate, dedicated champion, champion."""
        return self._loaded.model_for(tenant_id)

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
        loaded = self._loaded
        return self._predict(loaded, loaded.model_for(tenant_id), x, [tenant_id] * x.shape[0], explain=explain)

    def predict_rows(self, model: LoadedChurnModel, tenant_ids: Sequence[str], x: np.ndarray, *,
                     explain: bool = True) -> list[ChurnPrediction]:
        """Score the rows of many tenants that `model_for` gives the same `model` in one call (batch scoring: one
        XGBoost call per model, not one per tenant); `tenant_ids[i]` owns row i and picks its risk bands."""
        if len(tenant_ids) != x.shape[0]:
            raise InvalidInputError(f"{len(tenant_ids)} tenant ids for {x.shape[0]} rows")
        return self._predict(self._loaded, model, x, tenant_ids, explain=explain)

    def _predict(
        self, loaded: _Loaded, model: LoadedChurnModel, x: np.ndarray, tenant_ids: Sequence[str], *,
        explain: bool = True,
    ) -> list[ChurnPrediction]:
        import numpy as np

        if x.shape[0] == 0:
            return []
        scorer = loaded.scorers.get(model.version)
        if scorer is None or scorer.model is not model:  # a model loaded outside `_load` (tests)
            scorer = _Scorer(model)
        probabilities = scorer.probabilities(x)
        reasons: list[list[dict[str, Any]]] = [[] for _ in range(x.shape[0])]
        if explain:
            contribs = scorer.contributions(x)
            reasons = [scorer.reasons(np.asarray(row[:-1])) for row in contribs]
        bands: dict[str, Any] = {}
        out = []
        for p, r, tenant_id in zip(probabilities, reasons, tenant_ids, strict=True):
            if tenant_id not in bands:
                bands[tenant_id] = model.bands.get(tenant_id)
            rounded = round(float(p), 6)
            out.append(ChurnPrediction(rounded, risk_band(rounded, bands[tenant_id]), r, CHURN_MODEL, model.version))
        return out

    def predict(self, tenant_id: str, rows: Sequence[Mapping[str, float | None]]) -> list[ChurnPrediction]:
        """Calibrated churn probability, risk band and top reasons for each feature row of one tenant."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise InvalidInputError("tenant_id must be a non-empty string")
        loaded = self._loaded  # one snapshot: the matrix's column order is the scoring model's
        model = loaded.model_for(tenant_id)
        x = self.matrix(rows, model)
        fill_customer_base_columns(x, model.feature_names, model.customer_base, tenant_id)
        return self._predict(loaded, model, x, [tenant_id] * x.shape[0])


def reasons_json(reasons: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(reasons), separators=(",", ":"))


def load_churn_predictor(*, settings: Settings | None = None) -> ChurnPredictor:
    """The churn champion(s) from the registry; ModelUnavailableError when none is promoted yet."""
    return ChurnPredictor(settings=settings)
