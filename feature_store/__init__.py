"""The feature store: feature definitions, Spark offline pipelines, point-in-time training sets and the
online store.

    from feature_store import build_features, get_training_set, materialize, get_online_features

`import feature_store` stays light: Spark, DuckDB and the store clients load on first use.
"""

from __future__ import annotations

from typing import Any

from shironzi.lazy import lazy_attribute

_LAZY: dict[str, str] = {
    "Entity": "feature_store.definitions",
    "Feature": "feature_store.definitions",
    "FeatureView": "feature_store.definitions",
    "CUSTOMER": "feature_store.definitions",
    "TENANT": "feature_store.definitions",
    "list_feature_views": "feature_store.registry",
    "get_feature_view": "feature_store.registry",
    "build_features": "feature_store.offline",
    "get_training_set": "feature_store.retrieval",
    "materialize": "feature_store.materialize",
    "get_online_features": "feature_store.materialize",
    "open_online_store": "feature_store.online",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name, globals())
