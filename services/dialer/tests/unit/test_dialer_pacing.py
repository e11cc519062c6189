"""The pacing decision: modes, safety rails, monotonicity, the abandonment brake, invariants."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_dialer.domain.pacing import (
    DialMode,
    FloorState,
    PacingPolicy,
    compliance_aim,
    decide_dials,
    feedback_factor,
)
from plateau_dialer.domain.pacing_measurements import (
    ComplianceAbandon,
    DialOutcome,
    DialResolved,
    Lognormal,
    PacingEstimates,
    PacingEstimator,
)

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 2)
PREDICTIVE = PacingPolicy()
PROGRESSIVE = PacingPolicy(mode=DialMode.PROGRESSIVE)
PREVIEW = PacingPolicy(mode=DialMode.PREVIEW)


def campaign(live: float = 0.3) -> PacingEstimates:
    """A warmed-up campaign: 30 % live, 15 s dials, 180 s talk, 25 s wrap-up, on aim."""
    base = PacingEstimator.cold().estimates()
    return replace(
        base,
        live_probability=live,
        live_answer_seconds=Lognormal.from_mean_sd(15.0, 5.0),
        other_outcome_seconds=Lognormal.from_mean_sd(15.0, 5.0),
        talk_seconds=Lognormal.from_mean_sd(180.0, 90.0),
        wrap_up_seconds=Lognormal.from_mean_sd(25.0, 8.0),
    )


def with_abandonment(estimates: PacingEstimates, live: int, abandons: int) -> PacingEstimates:
    ledger = estimates.ledger
    for _ in range(live):
        ledger = ledger.record(DialResolved(day=DAY, outcome=DialOutcome.LIVE, seconds=15.0))
    for _ in range(abandons):
        ledger = ledger.record(ComplianceAbandon(day=DAY))
    return replace(estimates, ledger=ledger)


def floor_of(available: int, on_call: int = 10, wrap_up: int = 3, dialling: int = 2) -> FloorState:
    return FloorState(
        available=available,
        on_call=tuple(30.0 + 20.0 * i for i in range(on_call)),
        wrap_up=tuple(5.0 + 4.0 * i for i in range(wrap_up)),
        dialling=tuple(3.0 * i for i in range(dialling)),
    )


@pytest.mark.parametrize("policy", [PREDICTIVE, PROGRESSIVE, PREVIEW])
def test_no_dial_when_no_agent_is_logged_in(policy: PacingPolicy) -> None:
    assert decide_dials(policy, campaign(), FloorState(available=0), DAY).dials == 0


def test_no_dial_when_every_agent_is_paused() -> None:
    decision = decide_dials(PREDICTIVE, campaign(), FloorState(available=0, paused=5), DAY)
    assert decision.dials == 0
    assert "no agent" in decision.reason


@pytest.mark.parametrize(
    ("available", "dialling", "waiting", "expected"),
    [(5, 0, 0, 5), (5, 2, 0, 3), (5, 2, 1, 2), (2, 4, 0, 0), (0, 0, 0, 0)],
)
def test_progressive_dials_one_call_per_free_agent(
    available: int, dialling: int, waiting: int, expected: int
) -> None:
    floor = FloorState(
        available=available,
        on_call=(60.0, 90.0),
        dialling=tuple(1.0 for _ in range(dialling)),
        waiting=waiting,
    )
    assert decide_dials(PROGRESSIVE, campaign(), floor, DAY).dials == expected


def test_preview_never_dials_by_itself() -> None:
    assert decide_dials(PREVIEW, campaign(), floor_of(available=8), DAY).dials == 0


def test_predictive_dials_more_than_progressive_when_answers_are_rare() -> None:
    floor = floor_of(available=3, dialling=0)
    assert decide_dials(PREDICTIVE, campaign(0.2), floor, DAY).dials > 3


def test_predictive_dials_for_agents_about_to_leave_wrap_up() -> None:
    nobody_free = FloorState(available=0, on_call=(10.0,) * 10)
    finishing = FloorState(available=0, on_call=(10.0,) * 10, wrap_up=(30.0,) * 5)
    assert decide_dials(PREDICTIVE, campaign(), nobody_free, DAY).dials == 0
    assert decide_dials(PREDICTIVE, campaign(), finishing, DAY).dials > 0


@pytest.mark.parametrize("mode", [DialMode.PREDICTIVE, DialMode.PROGRESSIVE])
def test_more_available_agents_never_mean_fewer_dials(mode: DialMode) -> None:
    policy = PacingPolicy(mode=mode, max_dials_per_tick=100)
    dials = [decide_dials(policy, campaign(), floor_of(a), DAY).dials for a in range(12)]
    assert dials == sorted(dials)
    assert dials[-1] > dials[0]


def test_predictive_brakes_when_abandonment_is_over_target() -> None:
    floor = floor_of(available=4, dialling=0)
    on_aim = with_abandonment(campaign(), live=1000, abandons=25)
    over = with_abandonment(campaign(), live=1000, abandons=60)
    well_below = with_abandonment(campaign(), live=1000, abandons=2)
    calm = decide_dials(PREDICTIVE, on_aim, floor, DAY)
    braked = decide_dials(PREDICTIVE, over, floor, DAY)
    relaxed = decide_dials(PREDICTIVE, well_below, floor, DAY)
    assert braked.accepted_risk < calm.accepted_risk < relaxed.accepted_risk
    assert braked.dials < calm.dials <= relaxed.dials


def test_the_feedback_is_neutral_on_aim_and_clamped() -> None:
    on_aim = PREDICTIVE.abandon_target * PREDICTIVE.aim
    estimates = with_abandonment(campaign(), live=10000, abandons=round(10000 * on_aim))
    assert feedback_factor(PREDICTIVE, estimates.ledger, DAY) == pytest.approx(1.0, rel=0.02)
    awful = with_abandonment(campaign(), live=100, abandons=90)
    assert feedback_factor(PREDICTIVE, awful.ledger, DAY) == PREDICTIVE.feedback_floor


floors = st.builds(
    FloorState,
    available=st.integers(min_value=0, max_value=60),
    on_call=st.lists(st.floats(min_value=0.0, max_value=3600.0), max_size=60).map(tuple),
    wrap_up=st.lists(st.floats(min_value=0.0, max_value=600.0), max_size=20).map(tuple),
    paused=st.integers(min_value=0, max_value=10),
    dialling=st.lists(st.floats(min_value=0.0, max_value=120.0), max_size=80).map(tuple),
    waiting=st.integers(min_value=0, max_value=5),
)


@settings(max_examples=200, deadline=None)
@given(
    floor=floors,
    mode=st.sampled_from(list(DialMode)),
    live=st.floats(min_value=0.0, max_value=1.0),
    cap=st.integers(min_value=0, max_value=20),
    abandons=st.integers(min_value=0, max_value=100),
)
def test_decisions_are_never_negative_nor_above_the_caps(
    floor: FloorState, mode: DialMode, live: float, cap: int, abandons: int
) -> None:
    policy = PacingPolicy(mode=mode, max_dials_per_tick=cap)
    estimates = with_abandonment(campaign(live), live=200, abandons=abandons)
    decision = decide_dials(policy, estimates, floor, DAY)
    assert 0 <= decision.dials <= cap
    lines = policy.max_lines_per_agent * floor.staffed
    assert decision.dials == 0 or len(floor.dialling) + decision.dials <= lines
    if floor.staffed == 0 or mode is DialMode.PREVIEW:
        assert decision.dials == 0


def test_a_small_campaign_aims_further_under_the_target() -> None:
    small = with_abandonment(campaign(), live=2000, abandons=0).ledger
    large = with_abandonment(campaign(), live=50000, abandons=0).ledger
    cold = campaign().ledger
    target = PREDICTIVE.abandon_target
    assert compliance_aim(PREDICTIVE, cold, DAY) == target / 2.0
    assert compliance_aim(PREDICTIVE, small, DAY) < compliance_aim(PREDICTIVE, large, DAY)
    assert compliance_aim(PREDICTIVE, large, DAY) == pytest.approx(target * PREDICTIVE.aim)
