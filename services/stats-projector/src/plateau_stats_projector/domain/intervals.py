"""Reporting time: 15-minute intervals in UTC, exact splitting, tz-aware roll-up periods.

Every duration is handled as whole milliseconds since the Unix epoch (timestamps are
floored to the millisecond first). Splitting an integer range at integer boundaries is
exact: the pieces of a duration always add up to the duration, to the millisecond.

Roll-ups read a 15-minute interval in the tenant's time zone. Every UTC offset in use
is a multiple of 15 minutes, so a 15-minute UTC interval never straddles a local hour,
day or month boundary, and a roll-up is exactly the sum of its intervals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

INTERVAL_MS = 15 * 60 * 1000
#: The time zone of a tenant that configured none (the reference deployment's).
DEFAULT_TIME_ZONE = "Africa/Brazzaville"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, floored; refuses naive datetimes (which zone?)."""
    if moment.tzinfo is None:
        raise ValueError("a reporting timestamp must be timezone-aware")
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The UTC instant of a millisecond timestamp."""
    return _EPOCH + timedelta(milliseconds=ms)


def interval_of(ms: int) -> int:
    """Start (ms) of the 15-minute interval holding instant ``ms``."""
    return ms - ms % INTERVAL_MS


def split(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut at 15-minute boundaries: ``(interval start, ms in it)`` pieces.

    An empty range has no pieces; a range that ends before it starts is a caller's bug.
    """
    if end_ms < start_ms:
        raise ValueError(f"a duration cannot end ({end_ms}) before it starts ({start_ms})")
    pieces: list[tuple[int, int]] = []
    cursor = start_ms
    while cursor < end_ms:
        interval = interval_of(cursor)
        upto = min(interval + INTERVAL_MS, end_ms)
        pieces.append((interval, upto - cursor))
        cursor = upto
    return pieces


class Grain(StrEnum):
    """Roll-up periods, read in the tenant's time zone."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


def period_start(interval_ms: int, grain: Grain, zone: ZoneInfo) -> datetime:
    """The UTC instant where the local hour, day or month holding an interval starts."""
    local = from_ms(interval_ms).astimezone(zone)
    if grain is Grain.HOUR:
        start = local.replace(minute=0, second=0, microsecond=0)
    elif grain is Grain.DAY:
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # Re-resolve the offset: a day or month may start under another offset (DST).
    naive = start.replace(tzinfo=None)
    resolved = naive.replace(tzinfo=zone, fold=start.fold if grain is Grain.HOUR else 0)
    return resolved.astimezone(UTC)
