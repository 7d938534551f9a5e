"""Orchestration: the Airflow DAGs and the `shironzi demo` spine. Nothing imports this package."""
