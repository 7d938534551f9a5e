"""Schemathesis over the whole OpenAPI document, tenant operations with a tenant key and admin operations
with the platform admin key, valid and invalid inputs: no 5xx, and every response matches its documented
status code, content type and schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving._fixtures import ApiWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES_PER_MODE = 3


@pytest.fixture(scope="module")
def api_app(broker_world: ApiWorld) -> Iterator[Any]:
    from serving.app import create_app

    app = create_app(broker_world.settings)
    yield app
    app.state.services.close()


def _runner(operation: Any, mode: Any, headers: dict[str, str], checks: list[Any], calls: list[int]) -> Any:
    """A Hypothesis test of one operation in one generation mode."""
    from hypothesis import HealthCheck, given, settings

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(headers={**(case.headers or {}), **headers}, checks=checks)
        calls.append(response.status_code)

    return run


def test_every_operation_conforms_to_the_schema(api_app: Any, broker_world: ApiWorld) -> None:
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 24
    for operation in operations:
        auth = operation.definition.raw.get("x-shironzi-auth", "none")
        headers = broker_world.auth({"tenant": "own", "admin": "admin"}.get(auth, "none"))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _runner(operation, mode, headers, checks, calls)()
            except Unsatisfiable:  # no parameters and no body: there is no invalid input to send
                continue
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= 2 * len(operations) and any(200 <= c < 300 for c in calls)
    assert not [c for c in calls if c >= 500]
