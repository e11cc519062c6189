"""The one calling-window rule the dialer and the gateway share: days, hours, zone, holidays,
and windows that run past midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from plateau_contracts.events.dialer import CallingWindow

pytestmark = pytest.mark.unit

WEEKDAYS = CallingWindow(
    start=time(8),
    end=time(20),
    days=("mon", "tue", "wed", "thu", "fri"),
    time_zone="Africa/Brazzaville",  # UTC+1, no daylight saving
    holidays=(date(2026, 8, 14),),  # a Friday
)


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        (datetime(2026, 8, 13, 6, 59, tzinfo=UTC), False),  # 07:59 local
        (datetime(2026, 8, 13, 7, 0, tzinfo=UTC), True),  # 08:00 local
        (datetime(2026, 8, 13, 18, 59, tzinfo=UTC), True),  # 19:59 local
        (datetime(2026, 8, 13, 19, 0, tzinfo=UTC), False),  # 20:00: the end is excluded
        (datetime(2026, 8, 14, 10, 0, tzinfo=UTC), False),  # the holiday
        (datetime(2026, 8, 15, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 8, 13, 23, 30, tzinfo=UTC), False),  # 00:30 Friday local
    ],
)
def test_days_hours_zone_and_holidays(utc: datetime, open_: bool) -> None:
    assert WEEKDAYS.is_open(utc) is open_


def test_a_window_past_midnight_counts_for_the_day_it_opened() -> None:
    night = CallingWindow(
        start=time(22),
        end=time(2),
        days=("fri",),
        time_zone="UTC",
        holidays=(date(2026, 8, 21),),
    )
    assert night.is_open(datetime(2026, 8, 14, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert night.is_open(datetime(2026, 8, 15, 1, 0, tzinfo=UTC))  # Saturday 01:00: Friday's
    assert not night.is_open(datetime(2026, 8, 15, 23, 0, tzinfo=UTC))  # Saturday's own
    assert not night.is_open(datetime(2026, 8, 22, 1, 0, tzinfo=UTC))  # opened on a holiday


def test_an_unreadable_zone_is_never_open() -> None:
    broken = WEEKDAYS.model_copy(update={"time_zone": "Mars/Olympus"})
    assert not broken.is_open(datetime(2026, 8, 13, 10, 0, tzinfo=UTC))
