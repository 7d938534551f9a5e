"""Routes never block the event loop: a route is `async def` only when its body awaits (its blocking work
goes to the thread pool through `run_in_threadpool`); every other route is a plain `def`, which FastAPI runs
in its thread pool, so a Delta read, a model prediction or a SQL query never stalls the other requests."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap

from fastapi.routing import APIRoute

import serving.api.routes

# Answers on the event loop on purpose: it does no I/O, and liveness must not wait for a busy thread pool.
NO_IO_ASYNC_ROUTES = {"healthz"}


def _awaits(fn: ast.AsyncFunctionDef) -> bool:
    """Whether the function's own body awaits (nested functions do not count)."""
    pending: list[ast.AST] = list(fn.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    return False


def _routes() -> list[APIRoute]:
    routes = []
    for info in pkgutil.iter_modules(serving.api.routes.__path__):
        module = importlib.import_module(f"serving.api.routes.{info.name}")
        routes += [r for r in module.router.routes if isinstance(r, APIRoute)]
    return routes


def test_a_route_is_async_only_when_its_body_awaits() -> None:
    routes = _routes()
    assert len(routes) >= 25  # every router was found
    blocking = []
    for route in routes:
        endpoint = route.endpoint
        if not inspect.iscoroutinefunction(endpoint) or endpoint.__name__ in NO_IO_ASYNC_ROUTES:
            continue
        (fn,) = ast.parse(textwrap.dedent(inspect.getsource(endpoint))).body
        assert isinstance(fn, ast.AsyncFunctionDef)
        if not _awaits(fn):
            blocking.append(f"{endpoint.__module__}.{endpoint.__name__}")
    assert blocking == [], f"async def routes that never await (they run on the event loop): {blocking}"


def test_the_data_and_registry_routes_run_in_the_thread_pool() -> None:
    """The routes that read Delta, run the model or query the registry without awaiting are plain `def`."""
    by_name = {route.endpoint.__name__: route.endpoint for route in _routes()}
    for name in ("get_forecast", "get_customer_churn", "score_churn_batch", "create_tenant", "list_tenants",
                 "get_tenant", "suspend_tenant", "enable_module", "get_customer_features", "get_own_tenant"):
        assert not inspect.iscoroutinefunction(by_name[name]), name
