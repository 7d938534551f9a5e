"""The online store as an erasure target: compliance erasures delete and verify subjects here too.
Registered through the `shironzi.erasure_targets` entry point, so the kernel never imports this package."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from feature_store.online import open_online_store


class OnlineStoreErasureTarget:
    """Erases and scans one tenant's rows in the configured online store (SQLite or Redis)."""

    name = "online_store"

    def erase(self, tenant_id: str, subject_ids: Sequence[str] | None) -> int:
        store = open_online_store()
        try:
            if subject_ids is None:
                return store.delete_tenant(tenant_id)
            return sum(store.delete_subject(tenant_id, subject) for subject in subject_ids)
        finally:
            store.close()

    def scan(self, tenant_id: str, matches: Callable[[str], bool], *, mentions: Sequence[str] | None = None) -> int:
        store = open_online_store()
        seen: dict[str, bool] = {}  # every view of a customer repeats its key: each value is matched once

        def hit(value: str) -> bool:
            found = seen.get(value)
            if found is None:
                found = seen[value] = matches(value)
            return found

        try:
            return sum(
                1
                for row in store.iter_rows(tenant_id=tenant_id, mentioning=mentions)
                if hit(row.entity_key) or any(isinstance(v, str) and hit(v) for v in row.values.values())
            )
        finally:
            store.close()


def online_store_target() -> OnlineStoreErasureTarget:
    return OnlineStoreErasureTarget()
