"""The current time, which tests (and demos) can set through `FES_NOW`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from . import settings

# How far after "now" a timestamp may lie before it counts as in the future (clock skew).
FUTURE_TOLERANCE = timedelta(minutes=5)


def parse_instant(text: str) -> datetime:
    """An ISO date or timestamp; naive means UTC, as in Feast."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now() -> datetime:
    fixed = settings.fixed_now()
    return parse_instant(fixed) if fixed else datetime.now(UTC)
