"""Key storage: a dump of the registry database holds no issued key and no key secret in plaintext."""

from __future__ import annotations

import sqlite3

import pytest

from tests.serving._fixtures import build_world, isolated_home


def test_registry_dump_has_no_plaintext_keys(tmp_path: pytest.TempPathFactory) -> None:
    from shironzi.tenancy.keys import parse_key

    with isolated_home(tmp_path / "home") as settings:  # type: ignore[operator]
        world = build_world(settings, expired_key=False, seed_tables=False)
        path = settings.resolved_database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            dump = "\n".join(conn.iterdump())
        assert "api_keys" in dump and len(dump) > 1000
        for key in [world.admin_key, *world.keys.values()]:
            prefix, secret = parse_key(key)
            assert prefix in dump  # the public lookup handle is stored
            assert key not in dump and secret not in dump
