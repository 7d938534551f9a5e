"""The trend model's examples and its time split: training targets, calibration blocks and the holdout.

The holdout is the last HOLDOUT_DAYS days, forecast from HOLDOUT_ORIGINS weekly origins. The interval is calibrated
on weekly origins before it, in rolling blocks each forecast by a model trained only on targets before the block,
so that the calibration errors come from models as stale as the deployed one (docs/models/trend.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from models.trend.baselines import companions, seasonal_naive, statistical_forecast
from models.trend.features import (
    FEATURE_NAMES,
    HISTORY,
    HORIZON,
    Examples,
    Series,
    local_spread,
    origin_features,
)

HOLDOUT_ORIGINS = 5  # weekly origins; the holdout covers the last HORIZON + 7 * (HOLDOUT_ORIGINS - 1) days
HOLDOUT_DAYS = HORIZON + 7 * (HOLDOUT_ORIGINS - 1)
ORIGIN_STRIDE = 2  # train on every second origin: neighbours share 27 of their 28 targets
CALIBRATION_ORIGINS = 12  # weekly calibration origins before the holdout
CALIBRATION_BLOCK = 4  # weeks per calibrating model: as stale (0-3 weeks) as the deployed model on the holdout
SHORT_HISTORY_CALIBRATION_ORIGINS: tuple[int, ...] = (8, 4)  # fallbacks while a tenant's history is short
MIN_TRAIN_EXAMPLES = 100
CALIBRATION_FROM_END = HOLDOUT_DAYS + 7  # the newest calibration origin; its 7 targets end where the holdout begins
MIN_HISTORY_DAYS = HISTORY + HOLDOUT_DAYS + 7 * min(SHORT_HISTORY_CALIBRATION_ORIGINS) + 14  # shortest trainable


def make_examples(series_list: Sequence[Series], origins_of: Any, *, cutoff_from_end: int = 0) -> Examples:
    """Examples for each series at the origins `origins_of(series)` returns, with every target at least
    `cutoff_from_end` days before the series' last day."""
    import numpy as np

    xs, targets, scales, actuals, baselines, spreads, statisticals = [], [], [], [], [], [], []
    meta: dict[str, list[Any]] = {"tenant_id": [], "kpi": [], "bucket": [], "target_date": [], "horizon": []}
    for series, companion in zip(series_list, companions(series_list), strict=True):
        last = len(series.values) - 1 - cutoff_from_end
        for origin in origins_of(series):
            horizons = [h for h in range(1, HORIZON + 1) if origin + h <= last]
            if not horizons:
                continue
            made = origin_features(series, origin, horizons)
            if made is None:
                continue
            rows, scale = made
            actual = np.asarray([series.values[origin + h] for h in horizons])
            xs.append(rows)
            targets.append(actual / scale)
            scales.append(np.full(len(horizons), scale))
            actuals.append(actual)
            baselines.append(np.asarray([seasonal_naive(series, origin, h) for h in horizons]))
            spreads.append(np.full(len(horizons), local_spread(series, origin)))
            statisticals.append(statistical_forecast(series, origin, horizons, companion))
            meta["tenant_id"] += [series.tenant_id] * len(horizons)
            meta["kpi"] += [series.kpi] * len(horizons)
            meta["bucket"] += [series.bucket] * len(horizons)
            meta["target_date"] += [series.start + timedelta(days=origin + h) for h in horizons]
            meta["horizon"] += list(horizons)
    if not xs:
        return Examples(np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros(0), np.zeros(0), np.zeros(0),
                        np.zeros(0), spread=np.zeros(0), statistical=np.zeros(0))
    return Examples(np.vstack(xs), np.concatenate(targets), np.concatenate(scales), np.concatenate(actuals),
                    np.concatenate(baselines), **meta, spread=np.concatenate(spreads),
                    statistical=np.concatenate(statisticals))


def weekly_origins(first_from_end: int, count: int) -> Any:
    """`count` weekly origins, the newest `first_from_end` days before a series' last day."""
    return lambda series: [len(series.values) - 1 - first_from_end - 7 * k for k in range(count)]


def all_origins(cutoff_from_end: int, stride: int = ORIGIN_STRIDE) -> Any:
    """Every `stride`-th origin with a target at least `cutoff_from_end` days before a series' last day, counted
    back from the newest one."""
    return lambda series: range(len(series.values) - 2 - cutoff_from_end, HISTORY - 2, -stride)



def concat_examples(parts: Sequence[Examples]) -> Examples:
    """The rows of several example sets, in order."""
    import numpy as np

    if not parts:
        return make_examples([], lambda series: [])
    spreads = [p.spread if p.spread is not None else np.zeros(len(p.actual)) for p in parts]
    statisticals = [p.statistical for p in parts if p.statistical is not None]
    return Examples(np.vstack([p.x for p in parts]), *(np.concatenate([getattr(p, name) for p in parts])
                                                       for name in ("target", "scale", "actual", "baseline")),
                    *([v for p in parts for v in getattr(p, name)]
                      for name in ("tenant_id", "kpi", "bucket", "target_date", "horizon")),
                    spread=np.concatenate(spreads),
                    statistical=np.concatenate(statisticals) if len(statisticals) == len(parts) else None)


@dataclass
class CalibrationBlock:
    train: Examples  # every target before the block's oldest origin
    calibration: Examples  # the block's weekly origins, targets before the holdout


@dataclass
class TrendSplit:
    train: Examples  # every target before the holdout
    blocks: list[CalibrationBlock]  # newest first
    holdout: Examples

    @property
    def calibration(self) -> Examples:
        return concat_examples([block.calibration for block in self.blocks])


def split_examples(series_list: Sequence[Series], calibration_origins: int = CALIBRATION_ORIGINS) -> TrendSplit:
    """Time split: train on targets before the holdout (the last HOLDOUT_DAYS); the interval factors are set on
    `calibration_origins` weekly windows before the holdout, in blocks of CALIBRATION_BLOCK weeks each forecast by a
    model trained on targets before the block."""
    blocks = []
    for first in range(0, calibration_origins, CALIBRATION_BLOCK):
        count = min(CALIBRATION_BLOCK, calibration_origins - first)
        newest = CALIBRATION_FROM_END + 7 * first
        oldest = newest + 7 * (count - 1)
        blocks.append(CalibrationBlock(
            train=make_examples(series_list, all_origins(oldest), cutoff_from_end=oldest),
            calibration=make_examples(series_list, weekly_origins(newest, count), cutoff_from_end=HOLDOUT_DAYS)))
    return TrendSplit(
        train=make_examples(series_list, all_origins(HOLDOUT_DAYS), cutoff_from_end=HOLDOUT_DAYS),
        blocks=blocks,
        holdout=make_examples(series_list, weekly_origins(HORIZON, HOLDOUT_ORIGINS)),
    )
