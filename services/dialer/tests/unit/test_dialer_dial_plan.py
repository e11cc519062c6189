"""Each contact's dials: the window's next opening, retries by outcome, the attempt limit,
and the compliance record every dial gets whatever it decides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plateau_contracts.events.dialer import CallingWindow
from plateau_dialer.domain.dial_plan import (
    ABANDON_REST,
    ContactPlan,
    DialContext,
    DialResult,
    RetryRules,
    after_outcome,
    check_dial,
    dialled,
    first_attempt,
    next_opening,
)

pytestmark = pytest.mark.unit

WINDOW = CallingWindow(
    start=time(8),
    end=time(20),
    days=("mon", "tue", "wed", "thu", "fri", "sat"),
    time_zone="Africa/Brazzaville",  # UTC+1
    holidays=(date(2026, 8, 15),),  # a Saturday
)
RULES = RetryRules(max_attempts=3, retry_after=timedelta(hours=1))
PLAN = ContactPlan("ct-1", "renewals", "+242066123456")
THURSDAY_NOON = datetime(2026, 8, 13, 11, 0, tzinfo=UTC)  # 12:00 local


def context(**changes: object) -> DialContext:
    values: dict[str, object] = {
        "rules": RULES,
        "window": WINDOW,
        "list_version": 2,
        "still_allowed": True,
        "on_do_not_call": False,
        "campaign_running": True,
    }
    values.update(changes)
    return DialContext(**values)  # type: ignore[arg-type]


def test_the_next_opening_skips_nights_sundays_and_holidays() -> None:
    assert next_opening(WINDOW, THURSDAY_NOON) == THURSDAY_NOON
    friday_evening = datetime(2026, 8, 14, 19, 30, tzinfo=UTC)  # 20:30 local, closed
    # Saturday is a holiday and Sunday is not a day: Monday 08:00 local.
    assert next_opening(WINDOW, friday_evening) == datetime(2026, 8, 17, 7, 0, tzinfo=UTC)
    never = WINDOW.model_copy(update={"days": ()})
    assert next_opening(never, THURSDAY_NOON) is None


@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)))
def test_an_opening_is_always_open_and_never_before_the_asked_time(naive: datetime) -> None:
    after = naive.replace(tzinfo=UTC)
    opening = next_opening(WINDOW, after)
    assert opening is not None
    assert opening >= after
    assert WINDOW.is_open(opening)


def test_a_first_attempt_is_planned_at_the_next_opening() -> None:
    night = datetime(2026, 8, 12, 22, 0, tzinfo=UTC)  # 23:00 local Wednesday
    plan, scheduled = first_attempt(PLAN, WINDOW, night)
    assert plan.not_before == datetime(2026, 8, 13, 7, 0, tzinfo=UTC)
    assert scheduled is not None
    assert (scheduled.attempt_number, scheduled.reason) == (1, "first_attempt")
    assert not plan.due(night) and plan.due(plan.not_before)


@pytest.mark.parametrize(
    ("result", "delay", "reason"),
    [
        (DialResult.BUSY, timedelta(minutes=10), "retry_busy"),
        (DialResult.NO_ANSWER, timedelta(hours=1), "retry_no_answer"),
        (DialResult.MACHINE, timedelta(hours=1), "retry_no_answer"),
        (DialResult.FAILED, timedelta(hours=1), "retry_failed"),
    ],
)
def test_retries_wait_by_outcome(result: DialResult, delay: timedelta, reason: str) -> None:
    plan = dialled(replace_not_before(PLAN, THURSDAY_NOON), "att-1")
    assert plan.in_flight == "att-1" and not plan.dialable
    after, scheduled = after_outcome(plan, result, RULES, WINDOW, THURSDAY_NOON)
    assert after.in_flight is None
    assert after.not_before == THURSDAY_NOON + delay
    assert scheduled is not None
    assert (scheduled.attempt_number, scheduled.reason) == (2, reason)


def test_an_abandoned_customer_is_not_called_again_for_72_hours() -> None:
    plan = dialled(replace_not_before(PLAN, THURSDAY_NOON), "att-1")
    after, _ = after_outcome(plan, DialResult.COMPLIANCE_ABANDONED, RULES, WINDOW, THURSDAY_NOON)
    assert after.not_before is not None
    assert after.not_before >= THURSDAY_NOON + ABANDON_REST


def test_a_connected_call_completes_and_the_limit_ends_the_contact() -> None:
    plan = dialled(replace_not_before(PLAN, THURSDAY_NOON), "att-1")
    done, scheduled = after_outcome(plan, DialResult.CONNECTED, RULES, WINDOW, THURSDAY_NOON)
    assert (done.done, scheduled) == ("completed", None)
    for n in range(2, 4):
        plan, _ = after_outcome(plan, DialResult.NO_ANSWER, RULES, WINDOW, THURSDAY_NOON)
        plan = dialled(plan, f"att-{n}")
    assert plan.attempts == 3
    last, scheduled = after_outcome(plan, DialResult.NO_ANSWER, RULES, WINDOW, THURSDAY_NOON)
    assert (last.done, scheduled, last.dialable) == ("max_attempts_reached", None, False)


@pytest.mark.parametrize(
    ("changes", "at", "refusal"),
    [
        ({}, THURSDAY_NOON, None),
        ({"campaign_running": False}, THURSDAY_NOON, "campaign_not_running"),
        ({"still_allowed": False}, THURSDAY_NOON, "not_in_current_list"),
        ({"on_do_not_call": True}, THURSDAY_NOON, "do_not_call"),
        ({}, datetime(2026, 8, 15, 11, 0, tzinfo=UTC), "outside_calling_window"),
    ],
)
def test_every_dial_is_checked_and_recorded(
    changes: dict[str, object], at: datetime, refusal: str | None
) -> None:
    record = check_dial(PLAN, "att-9", context(**changes), at)
    assert record.refusal == refusal
    assert record.decision == ("refused" if refusal else "allowed")
    assert (record.attempt_id, record.attempt_number, record.list_version) == ("att-9", 1, 2)
    assert record.local_time.endswith("+01:00")
    assert record.within_calling_window is (refusal != "outside_calling_window")


def test_a_dial_beyond_the_limit_is_refused() -> None:
    spent = ContactPlan("ct-1", "renewals", "+242066123456", attempts=3)
    record = check_dial(spent, "att-4", context(), THURSDAY_NOON)
    assert (record.decision, record.refusal, record.attempt_number) == (
        "refused",
        "max_attempts_reached",
        4,
    )


def replace_not_before(plan: ContactPlan, at: datetime) -> ContactPlan:
    return replace(plan, not_before=at)
