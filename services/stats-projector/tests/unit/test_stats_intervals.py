"""Interval splitting is exact, and roll-ups in the tenant's zone are sums of intervals."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plateau_stats_projector.domain.intervals import (
    INTERVAL_MS,
    Grain,
    from_ms,
    interval_of,
    period_start,
    split,
    to_ms,
)

pytestmark = pytest.mark.unit

BRAZZAVILLE = ZoneInfo("Africa/Brazzaville")
PARIS = ZoneInfo("Europe/Paris")  # with daylight saving time, to test the hard case
KATHMANDU = ZoneInfo("Asia/Kathmandu")  # UTC+05:45, the oddest offset in use

DAY_2026 = to_ms(datetime(2026, 5, 4, tzinfo=UTC))
instants = st.integers(min_value=DAY_2026 - 400 * 86_400_000, max_value=DAY_2026 + 400 * 86_400_000)


def at(text: str) -> int:
    return to_ms(datetime.fromisoformat(text))


def test_a_call_across_two_boundaries_is_split_at_each() -> None:
    pieces = split(at("2026-05-04T10:10:00+00:00"), at("2026-05-04T10:40:30.250+00:00"))
    assert pieces == [
        (at("2026-05-04T10:00:00+00:00"), 5 * 60_000),
        (at("2026-05-04T10:15:00+00:00"), 15 * 60_000),
        (at("2026-05-04T10:30:00+00:00"), 10 * 60_000 + 30_250),
    ]


def test_an_empty_duration_has_no_pieces_and_a_negative_one_is_refused() -> None:
    assert split(5, 5) == []
    with pytest.raises(ValueError, match="before it starts"):
        split(6, 5)


def test_timestamps_are_floored_to_the_millisecond_and_must_be_aware() -> None:
    assert to_ms(datetime(1970, 1, 1, 0, 0, 0, 1999, tzinfo=UTC)) == 1
    assert from_ms(1) == datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        to_ms(datetime(2026, 5, 4))


@given(instants, st.integers(min_value=0, max_value=3 * 86_400_000))
def test_split_pieces_add_up_to_the_whole_and_stay_in_their_interval(
    start: int, length: int
) -> None:
    pieces = split(start, start + length)
    assert sum(ms for _, ms in pieces) == length
    cursor = start
    for interval, ms in pieces:
        assert interval == interval_of(cursor)
        assert 0 < ms <= INTERVAL_MS
        assert cursor + ms <= interval + INTERVAL_MS
        cursor += ms
    assert [i for i, _ in pieces] == sorted({i for i, _ in pieces})


def test_brazzaville_days_start_at_23_00_utc() -> None:
    late = at("2026-05-04T23:15:00+00:00")  # already 5 May, 00:15 in Brazzaville
    assert period_start(late, Grain.DAY, BRAZZAVILLE) == datetime(2026, 5, 4, 23, tzinfo=UTC)
    assert period_start(late, Grain.HOUR, BRAZZAVILLE) == datetime(2026, 5, 4, 23, tzinfo=UTC)
    assert period_start(late, Grain.MONTH, BRAZZAVILLE) == datetime(2026, 4, 30, 23, tzinfo=UTC)
    before = at("2026-05-04T22:45:00+00:00")
    assert period_start(before, Grain.DAY, BRAZZAVILLE) == datetime(2026, 5, 3, 23, tzinfo=UTC)


def test_a_day_with_a_clock_change_starts_at_local_midnight() -> None:
    # 29 March 2026: Paris moves from UTC+1 to UTC+2 at 02:00 local.
    evening = at("2026-03-29T20:00:00+00:00")
    assert period_start(evening, Grain.DAY, PARIS) == datetime(2026, 3, 28, 23, tzinfo=UTC)
    # 25 October 2026: 02:00-03:00 local happens twice; each hour keeps its own start.
    first = period_start(at("2026-10-25T00:30:00+00:00"), Grain.HOUR, PARIS)
    second = period_start(at("2026-10-25T01:30:00+00:00"), Grain.HOUR, PARIS)
    assert (first, second) == (
        datetime(2026, 10, 25, 0, tzinfo=UTC),
        datetime(2026, 10, 25, 1, tzinfo=UTC),
    )


@given(
    st.lists(st.tuples(instants, st.integers(0, 7_200_000)), min_size=1, max_size=30),
    st.sampled_from([BRAZZAVILLE, PARIS, KATHMANDU]),
)
def test_roll_ups_are_the_sums_of_their_intervals(
    durations: list[tuple[int, int]], zone: ZoneInfo
) -> None:
    intervals: dict[int, int] = defaultdict(int)
    for start, length in durations:
        for interval, ms in split(start, start + length):
            intervals[interval] += ms
    for grain in Grain:
        rolled: dict[datetime, int] = defaultdict(int)
        for interval, ms in intervals.items():
            rolled[period_start(interval, grain, zone)] += ms
        assert sum(rolled.values()) == sum(length for _, length in durations)
        # Independently: every millisecond of an interval lies in the same local period
        # as the interval's first and last millisecond (no interval straddles a period).
        for interval in intervals:
            first = from_ms(interval).astimezone(zone)
            last = (from_ms(interval + INTERVAL_MS) - timedelta(milliseconds=1)).astimezone(zone)
            fields = {
                Grain.HOUR: ("year", "month", "day", "hour"),
                Grain.DAY: ("year", "month", "day"),
                Grain.MONTH: ("year", "month"),
            }[grain]
            assert [getattr(first, f) for f in fields] == [getattr(last, f) for f in fields]
            start = period_start(interval, grain, zone)
            assert start <= from_ms(interval)
