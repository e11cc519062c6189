"""Each contact's dials: when the next attempt may start, the compliance check of every dial,
and what an outcome leads to. Pure: time, the campaign and the lists come in as arguments.

Rules (the campaign's settings, ``campaign.created``):

* at most ``max_attempts`` dials per contact;
* after an outcome, the next attempt waits by outcome: **busy** a short while (the customer
  is there, on another call: ``min(retry_after, 10 min)``), **no answer**, **machine** and
  **failed** the campaign's ``retry_after``; a **compliance abandon** 72 hours (Ofcom's rule:
  a customer whose answered call was dropped is not called again within 72 hours unless an
  agent is guaranteed); a **connected** call completes the contact;
* a planned attempt never starts outside the calling window: ``not_before`` is moved to the
  window's next opening (days, hours, zone and public holidays of
  :meth:`CallingWindow.is_open`);
* every dial is checked first and the check is recorded whatever it decides
  (``dial.compliance_checked``): the number must still be allowed in the current list,
  not on the do-not-call list, inside the window, and within the attempt limit. This ledger
  is what the client audits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from plateau_contracts.events.dialer import (
    CallingWindow,
    CampaignCreated,
    DialComplianceChecked,
    DialScheduled,
)

#: How far ahead the next opening of a window is looked for (a window that never opens
#: again — no day, every day a holiday — leaves the contact unplanned).
_HORIZON_DAYS = 62
#: Ofcom's persistent-misuse policy: no repeat of an abandoned call within 72 hours.
ABANDON_REST = timedelta(hours=72)
BUSY_RETRY_CAP = timedelta(minutes=10)


class DialResult(StrEnum):
    """How one dial ended, as the dialer counts it."""

    CONNECTED = "connected"  # a live answer connected to an agent
    MACHINE = "machine"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    COMPLIANCE_ABANDONED = "compliance_abandoned"


ScheduleReason = Literal["first_attempt", "retry_no_answer", "retry_busy", "retry_failed"]
_REASONS: dict[DialResult, ScheduleReason] = {
    DialResult.BUSY: "retry_busy",
    DialResult.NO_ANSWER: "retry_no_answer",
    DialResult.MACHINE: "retry_no_answer",
    DialResult.FAILED: "retry_failed",
    DialResult.COMPLIANCE_ABANDONED: "retry_no_answer",
}


@dataclass(frozen=True)
class RetryRules:
    max_attempts: int
    retry_after: timedelta

    @classmethod
    def of(cls, campaign: CampaignCreated) -> RetryRules:
        return cls(campaign.max_attempts, timedelta(seconds=campaign.retry_after_s))

    def delay(self, result: DialResult) -> timedelta:
        if result is DialResult.BUSY:
            return min(self.retry_after, BUSY_RETRY_CAP)
        if result is DialResult.COMPLIANCE_ABANDONED:
            return max(self.retry_after, ABANDON_REST)
        return self.retry_after


@dataclass(frozen=True)
class ContactPlan:
    """Where one contact stands: dials made, the next one's earliest start, or why it is done."""

    contact_id: str
    campaign_id: str
    number: str
    attempts: int = 0
    not_before: datetime | None = None
    in_flight: str | None = None  # the attempt id of a dial whose outcome is not known yet
    done: str | None = None  # completed, max_attempts_reached, withdrawn, no_window

    @property
    def dialable(self) -> bool:
        return self.done is None and self.in_flight is None and self.not_before is not None

    def due(self, at: datetime) -> bool:
        return self.dialable and self.not_before is not None and self.not_before <= at


def next_opening(window: CallingWindow, after: datetime) -> datetime | None:
    """The first instant at or after ``after`` when the window is open (None: not within two
    months, or a zone nobody can read). A closed window opens at its start time on some
    allowed day, so only those instants are candidates."""
    if window.is_open(after):
        return after
    zone = window.zone()
    if zone is None:
        return None
    local_day = after.astimezone(zone).date()
    for offset in range(_HORIZON_DAYS + 1):
        opening = datetime.combine(local_day + timedelta(days=offset), window.start, tzinfo=zone)
        if opening > after and window.is_open(opening):
            return opening.astimezone(after.tzinfo)
    return None


def first_attempt(
    plan: ContactPlan, window: CallingWindow, at: datetime
) -> tuple[ContactPlan, DialScheduled | None]:
    """Plan a new contact's first dial at the window's next opening."""
    return _schedule(plan, window, at, "first_attempt")


def after_outcome(
    plan: ContactPlan,
    result: DialResult,
    rules: RetryRules,
    window: CallingWindow,
    at: datetime,
) -> tuple[ContactPlan, DialScheduled | None]:
    """What the outcome of the dial in flight leads to: done, or the next attempt planned."""
    plan = replace(plan, in_flight=None)
    if result is DialResult.CONNECTED:
        return replace(plan, done="completed", not_before=None), None
    if plan.attempts >= rules.max_attempts:
        return replace(plan, done="max_attempts_reached", not_before=None), None
    return _schedule(plan, window, at + rules.delay(result), _REASONS[result])


def _schedule(
    plan: ContactPlan, window: CallingWindow, earliest: datetime, reason: ScheduleReason
) -> tuple[ContactPlan, DialScheduled | None]:
    opening = next_opening(window, earliest)
    if opening is None:
        return replace(plan, done="no_window", not_before=None), None
    planned = replace(plan, not_before=opening)
    return planned, DialScheduled(
        contact_id=plan.contact_id,
        campaign_id=plan.campaign_id,
        attempt_number=plan.attempts + 1,
        not_before=opening,
        reason=reason,
    )


@dataclass(frozen=True)
class DialContext:
    """What the check needs to know besides the plan, read just before the dial."""

    rules: RetryRules
    window: CallingWindow
    list_version: int
    still_allowed: bool  # the number is in the campaign's current list
    on_do_not_call: bool
    campaign_running: bool


def check_dial(
    plan: ContactPlan, attempt_id: str, context: DialContext, at: datetime
) -> DialComplianceChecked:
    """The compliance record of one dial: allowed, or refused by the first rule it breaks."""
    attempt_number = plan.attempts + 1
    within = context.window.is_open(at)
    refusal: str | None = None
    if not context.campaign_running:
        refusal = "campaign_not_running"
    elif not context.still_allowed:
        refusal = "not_in_current_list"
    elif context.on_do_not_call:
        refusal = "do_not_call"
    elif not within:
        refusal = "outside_calling_window"
    elif attempt_number > context.rules.max_attempts:
        refusal = "max_attempts_reached"
    return DialComplianceChecked(
        contact_id=plan.contact_id,
        campaign_id=plan.campaign_id,
        attempt_id=attempt_id,
        attempt_number=attempt_number,
        max_attempts=context.rules.max_attempts,
        number=plan.number,
        decision="refused" if refusal else "allowed",
        list_version=max(context.list_version, 1),
        on_do_not_call=context.on_do_not_call,
        local_time=at.astimezone(context.window.zone() or UTC).isoformat(timespec="seconds"),
        within_calling_window=within,
        refusal=refusal,
    )


def dialled(plan: ContactPlan, attempt_id: str) -> ContactPlan:
    """The plan once a dial was allowed and handed to the gateway."""
    return replace(plan, attempts=plan.attempts + 1, in_flight=attempt_id, not_before=None)
