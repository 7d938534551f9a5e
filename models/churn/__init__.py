"""The churn model: `train_churn` (XGBoost on the point-in-time training set, calibrated, logged to MLflow)."""

from models.churn.train import build_churn_dataset, churn_feature_refs, train_churn

__all__ = ["build_churn_dataset", "churn_feature_refs", "train_churn"]
