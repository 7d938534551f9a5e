"""Spark jobs: Spark Connect DataFrame/SQL code only, so they run on embedded Sail and on a Spark 4 cluster."""
