"""The served churn model: loaded lazily, warmed up, and swapped in place when the champion alias moves.

`models.inference.ChurnPredictor.refresh_if_changed()` re-reads the alias and swaps atomically; a
background thread calls it every `api_model_refresh_seconds`, so requests never wait for a reload and
never see a half-loaded model.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from models.inference import load_churn_predictor
from shironzi.errors import ModelUnavailableError, ShironziError
from shironzi.settings import Settings

logger = logging.getLogger("shironzi.serving.model")

CHURN_MODEL = "shironzi-churn"


class ModelHolder:
    """Owns this worker's ChurnPredictor and keeps it on the current champion."""

    def __init__(self, settings: Settings, *, on_version: Any = None) -> None:
        self.settings = settings
        self._predictor: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_version = on_version
        self.last_error: str | None = None
        self.last_check: float = 0.0

    @property
    def loaded(self) -> bool:
        return self._predictor is not None

    @property
    def version(self) -> str | None:
        predictor = self._predictor
        return None if predictor is None else str(predictor.version)

    def get(self) -> Any:
        """The predictor, loading it on first use; ModelUnavailableError when there is no champion yet."""
        predictor = self._predictor
        if predictor is not None:
            return predictor
        return self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._predictor is not None:
                return self._predictor
            try:
                predictor = load_churn_predictor(settings=self.settings)
                _warm_up(predictor)
            except ImportError as exc:
                self.last_error = f"the models package is not installed: {exc}"
                raise ModelUnavailableError(self.last_error) from exc
            except ShironziError as exc:
                self.last_error = exc.message
                raise ModelUnavailableError(f"no churn model to serve: {exc.message}") from exc
            except Exception as exc:  # MLflow raises its own hierarchy
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("loading the churn model failed: %s", self.last_error)
                raise ModelUnavailableError(f"no churn model to serve ({type(exc).__name__})") from exc
            self._predictor = predictor
            self.last_error = None
            self.last_check = time.monotonic()
            self._announce()
            return predictor

    def refresh(self) -> bool:
        """Load, or follow the champion alias if it moved; True when the served version changed."""
        predictor = self._predictor
        if predictor is None:
            try:
                self._load()
            except ModelUnavailableError:
                return False
            return True
        try:
            changed = bool(predictor.refresh_if_changed())
        except Exception as exc:  # keep serving the current version when the registry is unreachable
            self.last_error = f"refresh failed: {type(exc).__name__}: {exc}"
            logger.warning("champion refresh failed, still serving %s: %s", predictor.version, exc)
            return False
        self.last_check = time.monotonic()
        self.last_error = None
        if changed:
            # No thread pinning here: the swapped-in boosters already serve requests, and `set_param` on a booster
            # in use makes a concurrent predict fail (XGBoost "need_configuration_"); load_churn_version pinned them.
            _warm_up(predictor, pin_threads=False)
            self._announce()
            logger.info("now serving %s version %s", CHURN_MODEL, predictor.version)
        return changed

    def _announce(self) -> None:
        if self._on_version is not None:
            self._on_version(CHURN_MODEL, self.version)

    def start(self) -> None:
        """Start the background refresher (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shironzi-model-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.settings.api_model_refresh_seconds
        while not self._stop.wait(interval):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)


def _warm_up(predictor: Any, *, pin_threads: bool = True) -> None:
    """Pin XGBoost to one thread (each uvicorn worker is one process on one core: OpenMP fan-out for a
    single row only costs), then predict once so the first real request pays no lazy initialisation."""
    try:
        if pin_threads:
            booster = predictor.model_for("__warmup__").booster
            booster.set_param({"nthread": 1})
    except Exception as exc:  # the predictor's internals are not part of its contract: best effort
        logger.debug("could not pin the booster to one thread: %s", exc)
    try:
        predictor.predict("__warmup__", [dict.fromkeys(predictor.feature_names)])
    except Exception as exc:  # warm-up is best effort
        logger.debug("model warm-up skipped: %s", exc)
