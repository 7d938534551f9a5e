"""The trend model: `train_trend` (a global XGBoost quantile forecaster of each tenant's daily KPIs)."""

from models.trend.train import train_trend

__all__ = ["train_trend"]
