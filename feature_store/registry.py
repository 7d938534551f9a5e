"""The feature registry: every feature view by name, and feature references resolved against it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from feature_store.definitions import FeatureView
from feature_store.views import FEATURE_VIEWS
from shironzi.errors import ConfigurationError, FeatureNotFoundError, InvalidInputError


def _index(views: Iterable[FeatureView]) -> dict[str, FeatureView]:
    index: dict[str, FeatureView] = {}
    owner_of: dict[str, str] = {}
    for view in views:
        if view.name in index:
            raise ConfigurationError(f"feature view {view.name!r} is defined twice")
        for feature in view.feature_names:
            if feature in owner_of:  # training sets name columns by feature, so names must be unique
                raise ConfigurationError(f"feature {feature!r} is in both {owner_of[feature]!r} and {view.name!r}")
            owner_of[feature] = view.name
        index[view.name] = view
    return index


_VIEWS = _index(FEATURE_VIEWS)


def list_feature_views() -> list[FeatureView]:
    """Every registered feature view, in definition order."""
    return list(_VIEWS.values())


def get_feature_view(name: str) -> FeatureView:
    """One feature view by name; FeatureNotFoundError if unknown."""
    view = _VIEWS.get(name)
    if view is None:
        raise FeatureNotFoundError(
            f"unknown feature view {name!r}; known: {', '.join(_VIEWS)}", view=name
        )
    return view


def resolve_views(names: Sequence[str] | None) -> list[FeatureView]:
    """The named views (all of them for None), without duplicates, in definition order."""
    if names is None:
        return list_feature_views()
    wanted = {get_feature_view(name).name for name in names}
    return [v for v in _VIEWS.values() if v.name in wanted]


def resolve_features(refs: Sequence[str]) -> dict[str, list[str]]:
    """Feature references ("view:feature" or a whole "view") -> view name -> its features, in order."""
    if isinstance(refs, str) or not refs:
        raise InvalidInputError("features must be a non-empty list like ['customer_activity:events_30d']")
    chosen: dict[str, list[str]] = {}
    for ref in refs:
        if not isinstance(ref, str) or not ref:
            raise InvalidInputError(f"invalid feature reference {ref!r}")
        view_name, _, feature = ref.partition(":")
        view = get_feature_view(view_name)
        names = view.feature_names if not feature else [view.feature(feature).name]
        bucket = chosen.setdefault(view.name, [])
        bucket.extend(n for n in names if n not in bucket)
    return chosen


def describe_views(views: Iterable[FeatureView] | None = None) -> list[dict[str, Any]]:
    """A JSON-ready description of views and their features (for `shironzi features list --json`)."""
    return [
        {
            "name": v.name,
            "entity": v.entity.name,
            "join_keys": list(v.join_keys),
            "source": v.source,
            "table": v.table,
            "version": v.version,
            "ttl_days": v.ttl.total_seconds() / 86_400,
            "owner": v.owner,
            "description": v.description,
            "tags": list(v.tags),
            "features": [{"name": f.name, "dtype": f.dtype, "description": f.description} for f in v.features],
        }
        for v in (views if views is not None else list_feature_views())
    ]
