"""Daily UTC partitions as instants: where a day starts and ends, where the partitions begin
and end, and ranges of event timestamps clamped to them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc

EPOCH_DAY = date(1970, 1, 1)
ONE_DAY = timedelta(days=1)
_LAST_MICROSECOND = timedelta(microseconds=1)
LAST_INSTANT = ONE_DAY - _LAST_MICROSECOND  # a day's last instant, from its start


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, time(), tzinfo=UTC)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of `day` in UTC."""
    start = day_start(day)
    return start, start + ONE_DAY


def month_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the month holding `day`: the span of one storage partition."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return day_start(first), day_start(following)


def days_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[start of `first`, end of `last`): a range of days, both included."""
    return day_start(first), day_start(last) + ONE_DAY


def day_number(day: date) -> int:
    """Days since 1970-01-01: the key rows are grouped by when split into days."""
    return (day - EPOCH_DAY).days


_US_PER_DAY = 86_400_000_000
# Integer division truncates toward zero; shifting by a whole number of days first makes it
# round down for instants before 1970 too (-1 µs is day -1, not day 0).
_SHIFT_DAYS = 1_000_000


def day_numbers(timestamps: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """`day_number` of each UTC timestamp (microseconds)."""
    us = timestamps.cast(pa.int64())
    shifted = pc.add(us, _SHIFT_DAYS * _US_PER_DAY)
    return pc.subtract(pc.divide(shifted, _US_PER_DAY), _SHIFT_DAYS)


def partitions_end(now: datetime) -> datetime:
    """End of the last daily partition: with end_offset=1, today's partition exists."""
    return day_start(now.astimezone(UTC).date() + ONE_DAY)


def clamp_range(
    lo: datetime | None, hi: datetime | None, begin: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    """[lo, hi] within the partitions [begin, end), or None when nothing is left."""
    if lo is None or hi is None:
        return None
    lo, hi = max(lo, begin), min(hi, end - _LAST_MICROSECOND)
    return (lo, hi) if lo <= hi else None


def span(*ranges: tuple[datetime | None, datetime | None]) -> tuple[datetime, datetime] | None:
    """The smallest range holding every given (lo, hi) that is set."""
    los = [lo for lo, hi in ranges if lo is not None and hi is not None]
    his = [hi for lo, hi in ranges if lo is not None and hi is not None]
    return (min(los), max(his)) if los else None
