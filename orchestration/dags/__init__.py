"""One file per DAG; `_common.py` holds what they share. Loaded by the scheduler from this folder."""
