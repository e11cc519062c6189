"""The pacing estimator: cold start, convergence on a known stream, forgetting; the ledger;
its snapshot (what a restarted dialer starts from)."""

from __future__ import annotations

import json
import math
import random
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plateau_dialer.domain.pacing_measurements import (
    AbandonmentLedger,
    AmdFalsePositive,
    CallEnded,
    ComplianceAbandon,
    DialOutcome,
    DialPlaced,
    DialResolved,
    Lognormal,
    Moments,
    PacingEstimator,
    Priors,
    SnapshotError,
    WrapUpEnded,
    from_snapshot,
    snapshot,
)

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 2)


def resolved(outcome: DialOutcome, seconds: float = 15.0, day: date = DAY) -> DialResolved:
    return DialResolved(day=day, outcome=outcome, seconds=seconds)


def feed(estimator: PacingEstimator, live_share: float, count: int, seed: int) -> PacingEstimator:
    rng = random.Random(seed)
    for _ in range(count):
        outcome = DialOutcome.LIVE if rng.random() < live_share else DialOutcome.NO_ANSWER
        estimator = estimator.observe(resolved(outcome, rng.lognormvariate(math.log(12.0), 0.3)))
    return estimator


def test_a_cold_estimator_reports_its_conservative_priors() -> None:
    priors = Priors()
    estimates = PacingEstimator.cold(priors).estimates()
    assert estimates.live_probability == pytest.approx(priors.live_probability)
    assert estimates.talk_seconds.mean == pytest.approx(priors.talk_seconds.mean)
    assert estimates.wrap_up_seconds.mean == pytest.approx(priors.wrap_up_seconds.mean)
    # conservative: expects more customers than a typical list (10-30 %) and long calls
    assert estimates.live_probability >= 0.4
    assert estimates.talk_seconds.mean > 180.0
    assert estimates.ledger.days == ()


def test_the_answer_probability_converges_on_a_known_stream() -> None:
    estimator = feed(PacingEstimator.cold(), live_share=0.2, count=3000, seed=1)
    assert estimator.estimates().live_probability == pytest.approx(0.2, abs=0.06)


def test_durations_converge_to_their_lognormal_means() -> None:
    rng = random.Random(2)
    truth_talk = Lognormal.from_mean_sd(180.0, 90.0)
    truth_wrap = Lognormal.from_mean_sd(25.0, 8.0)
    estimator = PacingEstimator.cold()
    for _ in range(2000):
        talk = rng.lognormvariate(truth_talk.mu, truth_talk.sigma)
        wrap = rng.lognormvariate(truth_wrap.mu, truth_wrap.sigma)
        estimator = estimator.observe(CallEnded(talk_seconds=talk))
        estimator = estimator.observe(WrapUpEnded(wrap_up_seconds=wrap))
    estimates = estimator.estimates()
    assert estimates.talk_seconds.mean == pytest.approx(180.0, rel=0.2)
    assert estimates.wrap_up_seconds.mean == pytest.approx(25.0, rel=0.15)
    assert estimates.wrap_up_seconds.sigma == pytest.approx(truth_wrap.sigma, rel=0.3)


def test_the_estimator_forgets_an_old_answer_rate() -> None:
    estimator = feed(PacingEstimator.cold(), live_share=0.3, count=3000, seed=3)
    assert estimator.estimates().live_probability > 0.22
    estimator = feed(estimator, live_share=0.1, count=1500, seed=4)
    # six half-lives later the old 30 % is all but gone
    assert estimator.estimates().live_probability == pytest.approx(0.1, abs=0.05)


def test_moments_weigh_early_observations_as_a_plain_average() -> None:
    moments = Moments(mean=0.0, variance=0.0, weight=0.0)
    for value in (1.0, 2.0, 3.0):
        moments = moments.observe(value, half_life=1000.0)
    assert moments.mean == pytest.approx(2.0)
    assert moments.variance == pytest.approx(2.0 / 3.0)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=50))
def test_moments_stay_within_the_observed_range(values: list[float]) -> None:
    moments = Moments(mean=values[0], variance=0.0, weight=1.0)
    for value in values[1:]:
        moments = moments.observe(value, half_life=20.0)
    assert min(values) - 1e-6 <= moments.mean <= max(values) + 1e-6
    assert moments.variance >= 0.0


def test_the_ledger_counts_the_day_and_the_rolling_30_days_by_both_formulas() -> None:
    estimator = PacingEstimator.cold()
    for offset in range(40):
        day = DAY + timedelta(days=offset)
        estimator = estimator.observe(DialPlaced(day=day))
        for _ in range(10):
            estimator = estimator.observe(resolved(DialOutcome.LIVE, day=day))
        estimator = estimator.observe(ComplianceAbandon(day=day))
        if offset % 2 == 0:
            estimator = estimator.observe(AmdFalsePositive(day=day))
    ledger = estimator.estimates().ledger
    last = DAY + timedelta(days=39)
    today = ledger.day(last)
    assert (today.live_answers, today.abandons, today.amd_false_positives) == (10, 1, 0)
    assert today.us_rate() == pytest.approx(0.1)
    window = ledger.rolling(last)
    assert (window.live_answers, window.abandons, window.amd_false_positives) == (300, 30, 15)
    assert window.us_rate() == pytest.approx(30 / 300)
    assert window.ofcom_rate() == pytest.approx((30 + 15) / (300 + 15))
    assert len(ledger.days) == 30  # older days are dropped


def test_quiet_days_count_as_zero_in_the_rolling_window() -> None:
    ledger = AbandonmentLedger()
    ledger = ledger.record(resolved(DialOutcome.LIVE, day=DAY))
    ledger = ledger.record(ComplianceAbandon(day=DAY))
    later = DAY + timedelta(days=29)
    assert ledger.rolling(later).abandons == 1
    assert ledger.rolling(later + timedelta(days=1)).abandons == 0
    assert ledger.day(later).us_rate() == 0.0


def test_a_snapshot_gives_back_the_same_estimator_through_json() -> None:
    estimator = PacingEstimator.cold()
    day = date(2026, 5, 4)
    for i in range(40):
        outcome = DialOutcome.LIVE if i % 3 == 0 else DialOutcome.NO_ANSWER
        estimator = estimator.observe(DialPlaced(day=day - timedelta(days=i % 35)))
        estimator = estimator.observe(DialResolved(day=day, outcome=outcome, seconds=7.3 + i))
    estimator = estimator.observe(ComplianceAbandon(day=day))
    estimator = estimator.observe(CallEnded(talk_seconds=181.7))
    estimator = estimator.observe(WrapUpEnded(wrap_up_seconds=24.9))

    restored = from_snapshot(json.loads(json.dumps(snapshot(estimator))))

    assert restored == estimator
    assert restored.estimates() == estimator.estimates()


def test_a_snapshot_of_another_version_or_damaged_is_refused() -> None:
    data = snapshot(PacingEstimator.cold())
    with pytest.raises(SnapshotError, match="version 2"):
        from_snapshot({**data, "version": 2})
    with pytest.raises(SnapshotError, match="damaged"):
        from_snapshot({**data, "talk": [1.0, 2.0]})
