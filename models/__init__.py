"""Churn and trend models: training (XGBoost + MLflow), registry promotion, inference and batch scoring.

    from models.churn import train_churn
    from models.registry import promote_if_better
    from models.scoring import score_churn

Heavy libraries (xgboost, mlflow, sklearn) load inside the functions that need them.
"""
