"""The `__main__` file of a pytest-xdist worker (see tests/conftest.py): deliberately empty.

An xdist worker's `__main__` (execnet's) has neither `__spec__` nor `__file__`, which `pyspark.sql.connect` takes for
a doctest run without Spark Connect, and exits the process. Naming this file as that `__file__` tells it otherwise;
a child started by multiprocessing's spawn runs this file as its `__mp_main__`, which does nothing."""
