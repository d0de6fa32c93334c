"""Timestamps: stored in UTC, written out as ISO 8601 UTC with a ``Z``, on both backends.

PostgreSQL hands back zoned datetimes and SQLite naive ones (it keeps the UTC value without a
zone), so anything that writes a time for people or files (``--json`` output, model manifests,
bundles, verification records) goes through :func:`iso_utc`, and JSON writers pass
:func:`json_default` as ``default=``: the same instant prints the same text on either backend.
"""

from __future__ import annotations

from datetime import UTC, date, datetime


def utc(t: datetime) -> datetime:
    """``t`` as a zoned UTC datetime; a naive one is read as UTC (how the store keeps it)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso_utc(t: datetime) -> str:
    """``2026-12-03T16:22:05.123456Z``: ISO 8601, UTC, always with microseconds."""
    return utc(t).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def json_default(obj):
    """``default=`` for :func:`json.dumps`: datetimes as :func:`iso_utc`, dates as ISO 8601,
    anything else as its ``str``."""
    if isinstance(obj, datetime):
        return iso_utc(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    return str(obj)
