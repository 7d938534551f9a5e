"""Transformations: the dbt runner for the curated layer and the Spark jobs."""
