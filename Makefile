# Two set-up commands: `make demo` and `make test`. Both bootstrap .venv from nothing
# (idempotent: a stamp file records the lock that was installed).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-lock
UV_VERSION := 0.13.9
# Some machines set PYTHONDONTWRITEBYTECODE: then every process would recompile every module it imports
# (seconds per process for mlflow/airflow/dbt). Installed packages are byte-compiled at install time
# (--compile-bytecode) and the project's own modules may cache theirs.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint lock bootstrap clean

bootstrap: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --config-settings editable_mode=compat -e .
	@cp requirements.lock $(STAMP)

demo: $(STAMP)
	$(BIN)/shironzi demo

# The suite runs on TEST_WORKERS processes (pytest-xdist): many tests wait on servers and subprocesses, so two
# workers overlap those waits even on two cores. `--dist loadfile` keeps each test file (and each directory
# with a session-wide fixture, see tests/conftest.py) on one worker. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shironzi

# Regenerate the lock after changing pyproject.toml (needs network access to PyPI).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .shironzi
