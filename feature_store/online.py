"""The online store: the latest feature values per (tenant, entity, view), for low-latency serving.

Backends sit behind the `OnlineStore` protocol and are chosen by URL scheme
(`settings.resolved_online_store_url`): `sqlite:///path` (embedded default, in-process) or
`redis://host:port/db` (production). Every key starts with the tenant id, so colliding customer ids of two
tenants never see each other's values. The tenant-level entity uses the empty entity key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shironzi.errors import ConfigurationError, InvalidInputError, ServiceUnavailableError
from shironzi.settings import Settings, get_settings

TENANT_ENTITY_KEY = ""
"""The entity key of tenant-level views (one row per tenant)."""


class OnlineRow(NamedTuple):
    """One view's latest values for one entity of one tenant."""

    tenant_id: str
    view: str
    entity_key: str
    feature_timestamp: datetime
    values: dict[str, Any]


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))


def _check_tenant(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not tenant_id:
        raise InvalidInputError("tenant_id must be a non-empty string", field="tenant_id")
    return tenant_id


def _check_subject(customer_id: str) -> str:
    if not isinstance(customer_id, str) or not customer_id:
        raise InvalidInputError("customer_id must be a non-empty string", field="customer_id")
    return customer_id


@runtime_checkable
class OnlineStore(Protocol):
    """What the feature store needs from an online backend."""

    url: str

    def write_rows(self, rows: Iterable[OnlineRow]) -> int:
        """Upsert rows (one per tenant, view and entity); returns how many were written."""
        ...

    def read(
        self, tenant_id: str, entity_keys: Sequence[str], views: Sequence[str]
    ) -> dict[tuple[str, str], OnlineRow]:
        """(view, entity_key) -> row, for one tenant only."""
        ...

    def delete_subject(self, tenant_id: str, customer_id: str) -> int:
        """Erase every row of one customer of one tenant; returns the rows deleted."""
        ...

    def delete_tenant(self, tenant_id: str) -> int:
        """Erase every row of one tenant (offboarding)."""
        ...

    def iter_rows(self, *, tenant_id: str | None = None, mentioning: Sequence[str] | None = None
                  ) -> Iterator[OnlineRow]:
        """Every stored row (of one tenant), for erasure verification and audits. With `mentioning`, only the
        rows whose entity key or stored JSON text holds one of those texts (a pre-filter run by the backend, so
        an erasure's scan decodes the few rows that can name the subject, not every row of the tenant)."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- SQLite


class SqliteOnlineStoreConfig(BaseModel):
    """`sqlite:///absolute/path.db`: an in-process store in one file."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    busy_timeout_ms: int = Field(5_000, ge=0)


class SqliteOnlineStore:
    """The embedded default: one SQLite table keyed by (tenant_id, entity_key, view), WAL mode."""

    scheme: ClassVar[tuple[str, ...]] = ("sqlite",)

    def __init__(self, config: SqliteOnlineStoreConfig, *, url: str) -> None:
        self.url = url
        self.config = config
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(config.path), check_same_thread=False, isolation_level=None)
        self._conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS online_features ("
            " tenant_id TEXT NOT NULL, entity_key TEXT NOT NULL, view TEXT NOT NULL,"
            " feature_timestamp INTEGER NOT NULL, payload TEXT NOT NULL,"
            " PRIMARY KEY (tenant_id, entity_key, view)) WITHOUT ROWID"
        )

    @classmethod
    def from_url(cls, url: str) -> SqliteOnlineStore:
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise ConfigurationError(f"online store URL must look like sqlite:///path/online.db, got {url!r}")
        return cls(_config(SqliteOnlineStoreConfig, url, path=Path(path)), url=url)

    def write_rows(self, rows: Iterable[OnlineRow]) -> int:
        batch = [(_check_tenant(r.tenant_id), r.entity_key, r.view, _micros(r.feature_timestamp),
                  json.dumps(r.values, separators=(",", ":"))) for r in rows]
        if not batch:
            return 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO online_features (tenant_id, entity_key, view, feature_timestamp, payload)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, entity_key, view) DO UPDATE SET"
                    " feature_timestamp = excluded.feature_timestamp, payload = excluded.payload",
                    batch,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return len(batch)

    def read(
        self, tenant_id: str, entity_keys: Sequence[str], views: Sequence[str]
    ) -> dict[tuple[str, str], OnlineRow]:
        _check_tenant(tenant_id)
        if not entity_keys or not views:
            return {}
        sql = (
            "SELECT view, entity_key, feature_timestamp, payload FROM online_features WHERE tenant_id = ?"
            f" AND entity_key IN ({','.join('?' * len(entity_keys))}) AND view IN ({','.join('?' * len(views))})"
        )
        with self._lock:
            found = self._conn.execute(sql, (tenant_id, *entity_keys, *views)).fetchall()
        return {(view, key): OnlineRow(tenant_id, view, key, _from_micros(ts), json.loads(payload))
                for view, key, ts, payload in found}

    def delete_subject(self, tenant_id: str, customer_id: str) -> int:
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM online_features WHERE tenant_id = ? AND entity_key = ?",
                (_check_tenant(tenant_id), _check_subject(customer_id)),
            )
        return int(cursor.rowcount)

    def delete_tenant(self, tenant_id: str) -> int:
        with self._lock:
            cursor = self._conn.execute("DELETE FROM online_features WHERE tenant_id = ?", (_check_tenant(tenant_id),))
        return int(cursor.rowcount)

    def iter_rows(self, *, tenant_id: str | None = None, mentioning: Sequence[str] | None = None
                  ) -> Iterator[OnlineRow]:
        if mentioning is not None and not mentioning:
            return
        where: list[str] = []
        params: list[str] = []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(_check_tenant(tenant_id))
        if mentioning is not None:
            where.append("(" + " OR ".join("instr(entity_key, ?) > 0 OR instr(payload, ?) > 0" for _ in mentioning)
                         + ")")
            params.extend(text for text in mentioning for _ in range(2))
        sql = "SELECT tenant_id, view, entity_key, feature_timestamp, payload FROM online_features"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            found = self._conn.execute(sql + " ORDER BY tenant_id, entity_key, view", params).fetchall()
        for tenant, view, key, ts, payload in found:
            yield OnlineRow(tenant, view, key, _from_micros(ts), json.loads(payload))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------- Redis


class RedisOnlineStoreConfig(BaseModel):
    """`redis://host:port/db`: one hash per (tenant, entity), one field per view."""

    model_config = ConfigDict(extra="forbid")

    url: str
    key_prefix: str = Field("shironzi:fs", min_length=1)
    socket_timeout_seconds: float = Field(2.0, gt=0)


class RedisOnlineStore:
    """Production backend. Key `{prefix}:{tenant}:{entity}` (each part URL-quoted, so ':' cannot forge a
    key); field = view; value = JSON {"ts": microseconds, "values": {...}}. Erasing a customer is one DEL."""

    scheme: ClassVar[tuple[str, ...]] = ("redis", "rediss")

    def __init__(self, config: RedisOnlineStoreConfig) -> None:
        import redis

        self.url = config.url
        self.config = config
        self._client = redis.Redis.from_url(_without_options(config.url, RedisOnlineStoreConfig),
                                            socket_timeout=config.socket_timeout_seconds)
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    @classmethod
    def from_url(cls, url: str) -> RedisOnlineStore:
        return cls(_config(RedisOnlineStoreConfig, url, url=url))

    def _key(self, tenant_id: str, entity_key: str) -> str:
        return f"{self.config.key_prefix}:{quote(_check_tenant(tenant_id), safe='')}:{quote(entity_key, safe='')}"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise ServiceUnavailableError(f"online store {self.url} unavailable: {exc}") from exc

    def write_rows(self, rows: Iterable[OnlineRow]) -> int:
        count = 0
        pipe = self._client.pipeline(transaction=False)
        for row in rows:
            payload = json.dumps({"ts": _micros(row.feature_timestamp), "values": row.values}, separators=(",", ":"))
            pipe.hset(self._key(row.tenant_id, row.entity_key), row.view, payload)
            count += 1
            if count % 5_000 == 0:
                self._call(pipe.execute)
        self._call(pipe.execute)
        return count

    def read(
        self, tenant_id: str, entity_keys: Sequence[str], views: Sequence[str]
    ) -> dict[tuple[str, str], OnlineRow]:
        if not entity_keys or not views:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for key in entity_keys:
            pipe.hmget(self._key(tenant_id, key), list(views))
        replies = self._call(pipe.execute)
        out: dict[tuple[str, str], OnlineRow] = {}
        for key, values in zip(entity_keys, replies, strict=True):
            for view, raw in zip(views, values, strict=True):
                if raw is not None:
                    data = json.loads(raw)
                    out[(view, key)] = OnlineRow(tenant_id, view, key, _from_micros(data["ts"]), data["values"])
        return out

    def delete_subject(self, tenant_id: str, customer_id: str) -> int:
        key = self._key(tenant_id, _check_subject(customer_id))
        pipe = self._client.pipeline(transaction=True)
        pipe.hlen(key)
        pipe.delete(key)
        fields, _ = self._call(pipe.execute)
        return int(fields)

    def delete_tenant(self, tenant_id: str) -> int:
        deleted = 0
        for key in self._call(lambda: list(self._client.scan_iter(match=self._tenant_pattern(tenant_id),
                                                                    count=1_000))):
            deleted += int(self._call(self._client.hlen, key))
            self._call(self._client.delete, key)
        return deleted

    def _tenant_pattern(self, tenant_id: str) -> str:
        escaped = quote(_check_tenant(tenant_id), safe="")
        for char in "*?[]\\":
            escaped = escaped.replace(char, "\\" + char)
        return f"{self.config.key_prefix}:{escaped}:*"

    def iter_rows(self, *, tenant_id: str | None = None, mentioning: Sequence[str] | None = None
                  ) -> Iterator[OnlineRow]:
        pattern = self._tenant_pattern(tenant_id) if tenant_id is not None else f"{self.config.key_prefix}:*"
        keys = sorted(self._call(lambda: list(self._client.scan_iter(match=pattern, count=1_000))))
        prefix = len(self.config.key_prefix) + 1
        needles = None if mentioning is None else [text.encode() for text in mentioning]
        for raw_key in keys:
            tenant_part, _, entity_part = raw_key.decode()[prefix:].partition(":")
            named = needles is not None and any(text in unquote(entity_part) for text in mentioning or ())
            for view, raw in sorted(self._call(self._client.hgetall, raw_key).items()):
                if needles is not None and not named and not any(needle in raw for needle in needles):
                    continue  # the JSON text holds none of the texts: not decoded
                data = json.loads(raw)
                yield OnlineRow(unquote(tenant_part), view.decode(), unquote(entity_part),
                                _from_micros(data["ts"]), data["values"])

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------- registry


def _config(model: type[BaseModel], source_url: str, **values: Any) -> Any:
    """Build a backend config from the URL and its query string; unknown options are refused."""
    from urllib.parse import parse_qsl

    options = dict(parse_qsl(urlsplit(source_url).query))
    if model is RedisOnlineStoreConfig:  # redis-py reads its own query options from the URL
        options = {k: v for k, v in options.items() if k in model.model_fields}
    try:
        return model(**{**options, **values})
    except ValidationError as exc:
        raise ConfigurationError(f"invalid online store URL {source_url!r}: {exc.errors()[0]['msg']}") from exc


def _without_options(url: str, model: type[BaseModel]) -> str:
    """The URL minus the query options that belong to our config model (the client refuses them)."""
    from urllib.parse import parse_qsl, urlencode, urlunsplit

    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in model.model_fields]
    return urlunsplit(parts._replace(query=urlencode(kept)))


ONLINE_STORE_CLASS_FOR_SCHEME: dict[str, Any] = {
    "sqlite": SqliteOnlineStore,
    "redis": RedisOnlineStore,
    "rediss": RedisOnlineStore,
}


def open_online_store(url: str | None = None, *, settings: Settings | None = None) -> OnlineStore:
    """The online store for `url` (default: `settings.resolved_online_store_url`)."""
    url = url or (settings or get_settings()).resolved_online_store_url
    scheme = urlsplit(url).scheme
    backend = ONLINE_STORE_CLASS_FOR_SCHEME.get(scheme)
    if backend is None:
        raise ConfigurationError(
            f"unsupported online store URL {url!r}: use one of {', '.join(sorted(ONLINE_STORE_CLASS_FOR_SCHEME))}://"
        )
    store: OnlineStore = backend.from_url(url)
    return store
