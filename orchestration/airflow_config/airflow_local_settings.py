"""Airflow local settings for Shironzi (on PYTHONPATH through `orchestration.airflow_env.airflow_env`).

Compatibility shims for Airflow 3.2.2 with the newer pydantic / FastAPI / Starlette of our lock file. Both
break every task of the in-process Execution API (`airflow dags test`, the api-server); each shim applies
only when its symptom is present, so a fixed Airflow makes them no-ops:

1. pydantic >= 2.12 rejects the callable `Field(discriminator=...)` of `TIStateUpdate`
   ("TITerminalStatePayload needs a discriminator field"); wrapped in `pydantic.Discriminator`, as
   pydantic documents for callable discriminators.
2. The in-process Execution API starts its lifespan without waiting for it, so the first request can find
   no `app.state.svcs_registry`; the registry the lifespan would create is installed when the app is built.
   The app is also built once per process: `dags test` builds one per task, and each new app pays seconds
   for cadwyn's versioned routes on its first request.
3. `airflow dags test` of a DAG with a deadline alert crashes when the run succeeds: `DagRun.update_state`
   looks the alerts up by id, but a DAG deserialized for `dags test` holds the encoded alerts (dicts), not the
   ids the DAG processor stores. A dict is answered from its own encoded reference.
4. Tasks run in-process (`dags test`) reach `finalize` without `context["exception"]`, which the subprocess
   runner sets; failure callbacks then cannot say what failed. It is set the same way when missing.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Union, get_args


def _patch_ti_state_discriminator() -> None:
    import airflow.api_fastapi.execution_api.datamodels.taskinstance as models
    from pydantic import Discriminator, TypeAdapter

    try:
        TypeAdapter(models.TIStateUpdate)
        return  # this pydantic accepts it as is
    except Exception:  # noqa: BLE001 - pydantic.errors.PydanticUserError on pydantic >= 2.12
        pass
    union, _field = get_args(models.TIStateUpdate)
    members = get_args(union)
    models.TIStateUpdate = Annotated[Union[members], Discriminator(models.ti_state_discriminator)]  # noqa: UP007


def _patch_execution_api_registry() -> None:
    import airflow.api_fastapi.execution_api.app as app_module
    import svcs
    from airflow.api_fastapi.auth.tokens import JWTGenerator, JWTValidator

    original = app_module.create_task_execution_api_app
    if getattr(original, "_shironzi_patched", False):
        return

    built: list[Any] = []

    def create_task_execution_api_app() -> Any:
        if built:  # one app per process: cadwyn builds its versioned routes on the first request of each app
            return built[0]
        app = original()
        built.append(app)
        registry = svcs.Registry()
        registry.register_factory(JWTGenerator, app_module._jwt_generator)
        registry.register_value(JWTValidator, app_module._jwt_validator(), ping=JWTValidator.status)
        app.state.svcs_registry = registry  # the lifespan replaces it with its own once it has run
        return app

    create_task_execution_api_app._shironzi_patched = True  # type: ignore[attr-defined]
    app_module.create_task_execution_api_app = create_task_execution_api_app


def _patch_deadline_lookup_for_dags_test() -> None:
    from types import SimpleNamespace

    from airflow.models.deadline_alert import DeadlineAlert

    original = DeadlineAlert.__dict__["get_by_id"].__func__
    if getattr(original, "_shironzi_patched", False):
        return

    def get_by_id(cls: Any, deadline_alert_id: Any, session: Any = None) -> Any:
        if isinstance(deadline_alert_id, dict):  # an encoded alert of a DAG deserialized by `dags test`
            encoded = deadline_alert_id.get("__var", deadline_alert_id)
            holder = SimpleNamespace(reference=encoded.get("reference", {}))
            return SimpleNamespace(reference_class=DeadlineAlert.reference_class.fget(holder))
        if session is None:
            return original(cls, deadline_alert_id)
        return original(cls, deadline_alert_id, session=session)

    get_by_id._shironzi_patched = True  # type: ignore[attr-defined]
    DeadlineAlert.get_by_id = classmethod(get_by_id)  # type: ignore[method-assign,assignment]


def _patch_in_process_failure_context() -> None:
    import airflow.sdk.execution_time.task_runner as runner

    original = runner.finalize
    if getattr(original, "_shironzi_patched", False):
        return

    def finalize(ti: Any, state: Any, context: Any, log: Any, error: BaseException | None = None) -> Any:
        if error is not None and context.get("exception") is None:
            context["exception"] = error
        return original(ti, state, context, log, error)

    finalize._shironzi_patched = True  # type: ignore[attr-defined]
    runner.finalize = finalize


with contextlib.suppress(ImportError):
    _patch_ti_state_discriminator()
with contextlib.suppress(ImportError):
    _patch_in_process_failure_context()
with contextlib.suppress(ImportError):
    _patch_deadline_lookup_for_dags_test()
with contextlib.suppress(ImportError):
    _patch_execution_api_registry()
