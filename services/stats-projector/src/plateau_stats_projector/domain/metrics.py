"""Measures (additive counters kept per interval) and metrics (ratios computed from them).

Only measures are stored: counts and millisecond sums, which add up exactly across
intervals, so an hour, a day or a month is the plain sum of its intervals. Every metric a
report shows is a formula over measures, with a version the API returns next to the
figure; ``docs/metrics.md`` is the written definition of each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction


class Dimension(StrEnum):
    """What a measure is kept for."""

    QUEUE = "queue"
    AGENT = "agent"
    CAMPAIGN = "campaign"


class Measure(StrEnum):
    """Additive counters. ``answer_wait_ms``, ``abandon_wait_ms`` and ``handle_ms`` are
    whole per-call durations counted with their call; every other ``*_ms`` is time in a
    state, split exactly at interval boundaries."""

    # Queue visits (dimension queue).
    OFFERED = "offered"  # entries into the queue, at the time of entry
    ANSWERED = "answered"  # visits ended by an agent connecting, at the answer
    ANSWER_WAIT_MS = "answer_wait_ms"  # queue time of the answered visits, at the answer
    ABANDONED = "abandoned"  # visits ended by the caller hanging up, at the abandon
    ABANDONED_SHORT = "abandoned_short"  # of which within the short-abandon threshold
    ABANDON_WAIT_MS = "abandon_wait_ms"  # queue time of the abandoned visits
    OVERFLOWED = "overflowed"  # visits that left for another queue
    ROUTING_FAILED = "routing_failed"  # visits the acd gave up on
    WAIT_MS = "wait_ms"  # time calls spent waiting in the queue, split exactly
    # Agent segments (dimensions queue and agent).
    HANDLED = "handled"  # agent segments whose handling completed, at completion
    HANDLE_MS = "handle_ms"  # talk + hold + wrap-up of those segments, at completion
    TALK_MS = "talk_ms"  # connected and not on hold, split exactly
    HOLD_MS = "hold_ms"  # on hold, split exactly
    HOLDS = "holds"  # hold starts
    WRAP_UP_MS = "wrap_up_ms"  # after-call work of a call, split exactly
    TRANSFERRED_OUT = "transferred_out"  # segments ended by a blind transfer
    RING_NO_ANSWER = "ring_no_answer"  # reservations the agent let ring out
    # Agent states (dimension agent), from the agent's timeline, split exactly.
    STATE_AVAILABLE_MS = "state_available_ms"
    STATE_RESERVED_MS = "state_reserved_ms"
    STATE_ON_CALL_MS = "state_on_call_ms"
    STATE_WRAP_UP_MS = "state_wrap_up_ms"
    STATE_PAUSED_MS = "state_paused_ms"  # all codes; per code: ``state_paused_ms:<code>``
    STATE_UNAVAILABLE_MS = "state_unavailable_ms"
    # Campaigns (dimension campaign).
    DIALS = "dials"  # calls originated
    LIVE_ANSWERS = "live_answers"  # dial outcome `answered`
    NO_ANSWERS = "no_answers"
    BUSIES = "busies"
    MACHINES = "machines"
    DIAL_FAILURES = "dial_failures"
    CONNECTS = "connects"  # live answers an agent took
    COMPLIANCE_ABANDONS = "compliance_abandons"  # live answers without an agent in time


def paused_code_measure(code: str) -> str:
    """The measure of time paused with one pause code."""
    return f"{Measure.STATE_PAUSED_MS}:{code}"


#: Queue time below which an abandon is "short" (a wrong number, a caller who changed
#: their mind): counted, but left out of service level and abandonment rate.
SHORT_ABANDON_MS = 5_000

#: Bounds of the answer-wait histogram: each answer is counted once, in the bucket
#: ``answered_wait_le_<s>s`` of the smallest bound its queue time does not exceed (answers
#: after more than the last bound are in no bucket). A queue's service level uses the
#: largest bound not above its configured threshold (so it never flatters).
SERVICE_LEVEL_THRESHOLDS_S: tuple[int, ...] = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)


def answer_bucket_measure(bound_s: int) -> str:
    """The histogram bucket of answers whose queue time is at most ``bound_s`` seconds and
    more than the previous bound."""
    return f"answered_wait_le_{bound_s}s"


def answer_bucket_of(wait_ms: int) -> str | None:
    """The bucket an answer after ``wait_ms`` of queue time is counted in, if any."""
    for bound in SERVICE_LEVEL_THRESHOLDS_S:
        if wait_ms <= bound * 1000:
            return answer_bucket_measure(bound)
    return None


def answered_within(measures: Mapping[str, int], threshold_s: int) -> int:
    """Answers within the threshold (read down to a kept bound): the buckets up to it."""
    effective = effective_threshold_s(threshold_s)
    return sum(
        measures.get(answer_bucket_measure(bound), 0)
        for bound in SERVICE_LEVEL_THRESHOLDS_S
        if bound <= effective
    )


def effective_threshold_s(configured_s: int) -> int:
    """The kept threshold a queue's service level is computed with (see above)."""
    kept = [t for t in SERVICE_LEVEL_THRESHOLDS_S if t <= configured_s]
    return kept[-1] if kept else SERVICE_LEVEL_THRESHOLDS_S[0]


@dataclass(frozen=True)
class Figure:
    """A metric's value with the formula version that computed it; None: no denominator."""

    metric: str
    version: int
    value: Fraction | None


#: Formula versions; bump one when its definition changes (the API returns it).
FORMULA_VERSIONS: Mapping[str, int] = {
    "service_level": 1,
    "asa": 1,
    "aht": 1,
    "abandonment_rate": 1,
    "occupancy": 1,
    "compliance_abandonment_rate": 1,
}


def _ratio(numerator: int, denominator: int) -> Fraction | None:
    return Fraction(numerator, denominator) if denominator else None


def _get(measures: Mapping[str, int], name: str) -> int:
    return measures.get(name, 0)


def service_level(measures: Mapping[str, int], threshold_s: int) -> Figure:
    """Answered within the threshold ÷ (answered + abandoned, short abandons excluded)."""
    within = answered_within(measures, threshold_s)
    denominator = (
        _get(measures, Measure.ANSWERED)
        + _get(measures, Measure.ABANDONED)
        - _get(measures, Measure.ABANDONED_SHORT)
    )
    return Figure("service_level", FORMULA_VERSIONS["service_level"], _ratio(within, denominator))


def asa_ms(measures: Mapping[str, int]) -> Figure:
    """Average speed of answer: queue time of answered visits ÷ answered visits."""
    return Figure(
        "asa",
        FORMULA_VERSIONS["asa"],
        _ratio(_get(measures, Measure.ANSWER_WAIT_MS), _get(measures, Measure.ANSWERED)),
    )


def aht_ms(measures: Mapping[str, int]) -> Figure:
    """Average handle time: (talk + hold + wrap-up) of completed segments ÷ their count."""
    return Figure(
        "aht",
        FORMULA_VERSIONS["aht"],
        _ratio(_get(measures, Measure.HANDLE_MS), _get(measures, Measure.HANDLED)),
    )


def abandonment_rate(measures: Mapping[str, int]) -> Figure:
    """(Abandoned - short abandons) ÷ (offered - short abandons)."""
    short = _get(measures, Measure.ABANDONED_SHORT)
    return Figure(
        "abandonment_rate",
        FORMULA_VERSIONS["abandonment_rate"],
        _ratio(_get(measures, Measure.ABANDONED) - short, _get(measures, Measure.OFFERED) - short),
    )


def occupancy(measures: Mapping[str, int]) -> Figure:
    """Agent time on calls and wrap-up (reserved included) ÷ that plus available time."""
    busy = (
        _get(measures, Measure.STATE_RESERVED_MS)
        + _get(measures, Measure.STATE_ON_CALL_MS)
        + _get(measures, Measure.STATE_WRAP_UP_MS)
    )
    return Figure(
        "occupancy",
        FORMULA_VERSIONS["occupancy"],
        _ratio(busy, busy + _get(measures, Measure.STATE_AVAILABLE_MS)),
    )


def compliance_abandonment_rate(measures: Mapping[str, int]) -> Figure:
    """Compliance abandons ÷ live answers of a campaign."""
    return Figure(
        "compliance_abandonment_rate",
        FORMULA_VERSIONS["compliance_abandonment_rate"],
        _ratio(_get(measures, Measure.COMPLIANCE_ABANDONS), _get(measures, Measure.LIVE_ANSWERS)),
    )
