"""How many new dials to place now: predictive, progressive and preview pacing.

Pure: the caller passes the live measurements (``pacing_measurements``), the agents' and
calls' states at this moment (``FloorState``, with elapsed times in seconds) and the
campaign's calendar day; ``decide_dials`` returns how many dials to start now and why.

**Predictive model.** Think of one more dial placed now. If it is answered live, that
happens after a time ``tau`` drawn from the measured live-answer time, and it is abandoned
when every agent free by ``tau + 2 s`` (the connect window) has already been taken by an
earlier live answer. So its *marginal abandon risk* is ``P(D(tau) >= S(tau + 2 s))``:

* ``S(h)``, agents free by ``h``: the available agents, plus each agent in wrap-up with
  the probability its wrap-up ends within ``h`` given how long it has lasted, plus each
  agent on a call with the probability that the rest of the call and a wrap-up both fit in
  ``h`` (lognormal talk and wrap-up, conditioned on the elapsed time);
* ``D(tau)``, live answers competing for them: the answers waiting now, each call in
  flight with the probability it turns into a live answer before ``tau`` given that it has
  not ended after its elapsed time (Bayes on the live-answer and other-outcome time
  distributions), and each of the other new dials of this tick (binomial, ``p`` times the
  live-answer time's CDF at ``tau``).

Both sums of independent Bernoullis are approximated by normals (with a continuity
correction), and the risk is averaged over three quantiles of ``tau``. The dialer places
the largest number of dials whose marginal risk stays under the *accepted risk*; placing
every dial whose risk is acceptable is what keeps agents busiest for that risk.

The accepted risk is ``base_risk`` scaled by a feedback term from the measured abandonment
(the day's rate and the rolling 30 days', each blended with a prior at the aim so a quiet
morning does not swing it): the worse of the two, over the aim, raised to ``-gain``, and
clamped. Above the aim it brakes, well below it relaxes. The aim sits under the
abandonment target (3 % by default) by the noise of the 30-day rate (``compliance_aim``),
so that 99 % of 30-day windows stay under the target; small campaigns aim lower.

Safety rails in every mode: no dial when no agent is staffed (available, on a call or in
wrap-up), at most ``max_dials_per_tick`` per decision, at most ``max_lines_per_agent``
calls in flight per staffed agent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from plateau_dialer.domain.pacing_measurements import AbandonmentLedger, PacingEstimates

_SQRT2 = math.sqrt(2.0)
# Three equal-mass points of a standard normal (quantiles 1/6, 1/2, 5/6).
_TAU_POINTS = (-0.9674215661017008, 0.0, 0.9674215661017008)


class DialMode(StrEnum):
    """A campaign's dial mode."""

    PREVIEW = "preview"
    PROGRESSIVE = "progressive"
    PREDICTIVE = "predictive"


class AbandonFormula(StrEnum):
    """Which abandonment rate the feedback term holds to the target."""

    US = "us"
    OFCOM = "ofcom"


@dataclass(frozen=True, slots=True)
class FloorState:
    """The campaign's agents and calls at the moment of the decision.

    Elapsed times are seconds since the state began: talk time for agents on a call,
    time in wrap-up, time since each dial in flight started ringing.
    """

    available: int
    on_call: tuple[float, ...] = ()
    wrap_up: tuple[float, ...] = ()
    paused: int = 0
    dialling: tuple[float, ...] = ()
    waiting: int = 0
    """Live answers waiting for an agent right now (inside their connect window)."""

    @property
    def staffed(self) -> int:
        """Agents who will take calls: available, on a call or in wrap-up (not paused)."""
        return self.available + len(self.on_call) + len(self.wrap_up)


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    """A campaign's pacing settings."""

    mode: DialMode = DialMode.PREDICTIVE
    abandon_target: float = 0.03
    aim: float = 0.85
    """Share of the target the feedback aims at, at most, leaving room for chance."""
    compliance_z: float = 2.33
    """The aim also stays this many standard errors of the 30-day rate under the target
    (2.33: 99 % of 30-day windows), so a small campaign, whose rate is noisier, aims lower."""
    formula: AbandonFormula = AbandonFormula.US
    connect_window_seconds: float = 2.0
    max_dials_per_tick: int = 10
    max_lines_per_agent: float = 6.0
    base_risk: float = 0.025
    """Marginal abandon risk accepted for a dial while abandonment is on the aim."""
    feedback_gain: float = 5.0
    feedback_floor: float = 0.1
    feedback_ceiling: float = 3.0
    daily_prior_answers: float = 150.0
    rolling_prior_answers: float = 300.0


@dataclass(frozen=True, slots=True)
class PacingDecision:
    """How many dials to place now, and the figures that decided it."""

    dials: int
    reason: str
    accepted_risk: float = 0.0
    next_dial_risk: float = 0.0
    """Marginal abandon risk of the first dial *not* placed (1.0 when the cap stopped it)."""


def decide_dials(
    policy: PacingPolicy, estimates: PacingEstimates, floor: FloorState, day: date
) -> PacingDecision:
    """The number of new dials to place now, under the policy's mode."""
    if floor.staffed == 0:
        return PacingDecision(dials=0, reason="no agent is staffed")
    if policy.mode is DialMode.PREVIEW:
        return PacingDecision(dials=0, reason="preview: each dial is an agent's request")
    lines_left = math.floor(policy.max_lines_per_agent * floor.staffed) - len(floor.dialling)
    room = max(0, min(policy.max_dials_per_tick, lines_left))
    if policy.mode is DialMode.PROGRESSIVE:
        wanted = floor.available - len(floor.dialling) - floor.waiting
        dials = max(0, min(wanted, room))
        return PacingDecision(dials=dials, reason="progressive: one call per free agent")
    return _predictive(policy, estimates, floor, day, room)


def feedback_factor(policy: PacingPolicy, ledger: AbandonmentLedger, day: date) -> float:
    """How much the accepted risk is scaled by the abandonment measured so far (1 on aim)."""
    aim = compliance_aim(policy, ledger, day)
    rates = []
    for counts, prior in (
        (ledger.day(day), policy.daily_prior_answers),
        (ledger.rolling(day), policy.rolling_prior_answers),
    ):
        if policy.formula is AbandonFormula.OFCOM:
            abandons = counts.abandons + counts.amd_false_positives
            answers = counts.live_answers + counts.amd_false_positives
        else:
            abandons, answers = counts.abandons, counts.live_answers
        rates.append((abandons + aim * prior) / (answers + prior))
    ratio = max(rates) / aim
    factor: float = ratio ** (-policy.feedback_gain)
    return min(max(factor, policy.feedback_floor), policy.feedback_ceiling)


def compliance_aim(policy: PacingPolicy, ledger: AbandonmentLedger, day: date) -> float:
    """The abandonment rate the feedback holds: under the target by the 30-day rate's noise.

    ``min(target x aim, target - z x sqrt(target (1 - target) / n))`` with ``n`` the live
    answers of the rolling 30 days, and never under half the target.
    """
    target = policy.abandon_target
    window = ledger.rolling(day)
    answers = window.live_answers
    if policy.formula is AbandonFormula.OFCOM:
        answers += window.amd_false_positives
    noise = math.sqrt(target * (1.0 - target) / max(answers, 1))
    return max(target / 2.0, min(target * policy.aim, target - policy.compliance_z * noise))


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / _SQRT2))


def _predictive(
    policy: PacingPolicy, est: PacingEstimates, floor: FloorState, day: date, room: int
) -> PacingDecision:
    accepted = policy.base_risk * feedback_factor(policy, est.ledger, day)
    p = est.live_probability
    if room == 0:
        return PacingDecision(
            dials=0, reason="line cap reached", accepted_risk=accepted, next_dial_risk=1.0
        )
    if p <= 0.0:
        return PacingDecision(
            dials=room, reason="no dial is expected to be answered", accepted_risk=accepted
        )
    terms = _risk_terms(est, floor, policy.connect_window_seconds)
    dials = 0
    risk = 0.0
    while dials < room:
        risk = 0.0
        for gap, variance, m in terms:
            mean = gap + dials * m + 0.5
            var = variance + dials * m * (1.0 - m)
            risk += _normal_cdf(mean / math.sqrt(var)) if var > 1e-12 else float(mean > 0.0)
        risk /= len(terms)
        if risk > accepted:
            return PacingDecision(
                dials=dials,
                reason="predictive: next dial's abandon risk over the accepted risk",
                accepted_risk=accepted,
                next_dial_risk=risk,
            )
        dials += 1
    return PacingDecision(
        dials=dials, reason="predictive: capped", accepted_risk=accepted, next_dial_risk=1.0
    )


def _risk_terms(
    est: PacingEstimates, floor: FloorState, window: float
) -> list[tuple[float, float, float]]:
    """Per quadrature point of ``tau``: mean of D - S, its variance, a new dial's share."""
    p = est.live_probability
    live_t, other_t = est.live_answer_seconds, est.other_outcome_seconds
    talk_t, wrap_t = est.talk_seconds, est.wrap_up_seconds
    # The CDFs are written out (one erf of a scaled log) because this runs at every tick
    # for every agent and call; a method call per term costs more than the arithmetic.
    erf, log = math.erf, math.log
    l_mu, l_k = live_t.mu, 1.0 / (live_t.sigma * _SQRT2)
    t_mu, t_k = talk_t.mu, 1.0 / (talk_t.sigma * _SQRT2)
    w_mu, w_k = wrap_t.mu, 1.0 / (wrap_t.sigma * _SQRT2)

    # What each call in flight has already used up of its distributions.
    in_flight: list[tuple[float, float, float]] = []
    for elapsed in floor.dialling:
        f_live = live_t.cdf(elapsed)
        still = p * (1.0 - f_live) + (1.0 - p) * (1.0 - other_t.cdf(elapsed))
        if still > 1e-9:
            in_flight.append((elapsed, f_live, 0.5 * p / still))
    wrap_points = [wrap_t.quantile_z(z) for z in _TAU_POINTS]
    shortest_wrap = wrap_points[0]
    on_call = [(e, talk_t.cdf(e)) for e in floor.on_call]
    in_wrap = [(w, wrap_t.cdf(w)) for w in floor.wrap_up]

    terms: list[tuple[float, float, float]] = []  # (mean D - S, variance, new dial's p)
    for tau in [live_t.quantile_z(z) for z in _TAU_POINTS]:
        horizon = tau + window
        supply = float(floor.available)
        supply_var = 0.0
        for w, f_w in in_wrap:
            f_end = 0.5 * (1.0 + erf((log(w + horizon) - w_mu) * w_k))
            q = (f_end - f_w) / max(1.0 - f_w, 1e-9)
            supply += q
            supply_var += q * (1.0 - q)
        if horizon > shortest_wrap:
            for e, f_e in on_call:
                q = 0.0
                for wrap in wrap_points:
                    if horizon > wrap:
                        f_end = 0.5 * (1.0 + erf((log(e + horizon - wrap) - t_mu) * t_k))
                        q += (f_end - f_e) / max(1.0 - f_e, 1e-9)
                q /= len(wrap_points)
                supply += q
                supply_var += q * (1.0 - q)
        demand = float(floor.waiting)
        demand_var = 0.0
        for elapsed, f_live, half_scale in in_flight:
            # half_scale * (1 + erf(..)) - scale * f_live: P(live by elapsed + tau | alive).
            q = (
                half_scale * (1.0 + erf((log(elapsed + tau) - l_mu) * l_k))
                - 2.0 * half_scale * f_live
            )
            q = min(1.0, q)
            demand += q
            demand_var += q * (1.0 - q)
        terms.append((demand - supply, supply_var + demand_var, p * live_t.cdf(tau)))
    return terms
