"""Helpers of the lake tests: the type of the `make_events` fixture."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

MakeEvents = Callable[..., pa.Table]
"""`make_events(n, seed=..., ...)`: a batch of n canonical events."""
