"""Minimum necessary on the dashboards: PHI ids are shown in clear only to a viewer whose key has `phi:read`.

The tables hold a healthcare tenant's patient ids encrypted (`shironzi.privacy.phi`); every other viewer,
operators' admin keys included, sees those protected ids, which still tell rows apart."""

from __future__ import annotations

import polars as pl

from shironzi.errors import KeyDestroyedError, NotFoundError
from shironzi.privacy.phi import PHI_PREFIX, PhiCipher
from shironzi.tenancy.catalog import PHI_READ_SCOPE


def shown_ids(ids: pl.Series, *, tenant_id: str, scopes: tuple[str, ...]) -> pl.Series:
    """`ids` as this viewer may see them: decrypted for `phi:read` (once per distinct id), else unchanged."""
    if PHI_READ_SCOPE not in scopes or not ids.str.starts_with(PHI_PREFIX).any():
        return ids
    try:
        cipher = PhiCipher.of(tenant_id)
    except (NotFoundError, KeyDestroyedError):
        return ids  # no key: nothing can be shown in clear
    distinct = ids.unique().drop_nulls()
    clear = pl.Series([cipher.reveal(v) for v in distinct.to_list()], dtype=pl.String)
    mapping = dict(zip(distinct.to_list(), clear.to_list(), strict=True))
    return ids.replace_strict(mapping, default=None, return_dtype=pl.String).fill_null(ids)
