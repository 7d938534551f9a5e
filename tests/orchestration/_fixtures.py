"""Helpers shared by the orchestration tests."""

from __future__ import annotations

import datetime as dt

from shironzi.settings import get_settings


def a_closed_day() -> dt.date:
    """The day before the newest day the audit digest's grace period has closed: a day whose day digest may be
    written now. In the first minutes after midnight (UTC) that is the day before yesterday, because yesterday's
    last hour is still within the grace period."""
    grace = dt.timedelta(seconds=get_settings().audit_digest_grace_seconds)
    return (dt.datetime.now(dt.UTC) - grace).date() - dt.timedelta(days=1)
