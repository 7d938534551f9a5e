"""A private bundled broker per test module (real tansu on a free port), and unique topic names."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingestion.stream._fixtures import require_broker_binary

_topic_numbers = itertools.count()


@pytest.fixture(scope="module")
def broker_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a private bundled broker, started for this module and stopped afterwards."""
    require_broker_binary()
    from ingestion.stream.broker import running_broker

    with running_broker(tmp_path_factory.mktemp("broker")) as info:
        yield info.bootstrap


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test in this run uses (the module broker is shared)."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:60]
    return f"t{os.getpid()}-{next(_topic_numbers)}-{base}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]
