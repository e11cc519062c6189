"""Live measurements the pacing decision works from, learned from the dialer's events.

Pure: every fact comes in as an argument (durations in seconds, the campaign's calendar
day for the abandonment ledger); nothing here reads a clock or does I/O. Every object is
immutable: ``observe`` returns the updated estimator.

Estimates forget the past exponentially, per observation, so a campaign whose answer rate
drifts through the day is followed within a few hundred dials. A cold start begins from
*conservative* priors, each worth a few observations: a high live-answer probability, quick
answers, long talk and long wrap-up all make the pacing expect more customers and fewer
free agents than it will probably see, so its first dials err towards idle agents rather
than abandoned customers.

Durations are modelled as lognormal: the estimator keeps the forgotten mean and variance of
their logarithms (talk time, wrap-up, the time to a live answer, the time a dial takes to
end any other way), which is what the pacing needs for its probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

ROLLING_DAYS = 30
"""The abandonment rate's long window: this day and the 29 before it."""

_SQRT2 = math.sqrt(2.0)


class DialOutcome(StrEnum):
    """How a dial ended, as the gateway reports it (after answering-machine detection)."""

    LIVE = "live"
    MACHINE = "machine"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Moments:
    """Exponentially forgotten mean and variance of a stream of numbers.

    ``weight`` is how many observations the figures are worth (the prior's weight plus the
    observations, capped by the memory): each new observation gets ``1 / weight`` of the
    say, so early on it is a plain average and later an exponential one whose half-life is
    ``half_life`` observations.
    """

    mean: float
    variance: float
    weight: float

    def observe(self, value: float, half_life: float) -> Moments:
        """The moments with ``value`` added, older values forgotten at ``half_life``."""
        memory = half_life / math.log(2.0)
        weight = min(self.weight + 1.0, memory)
        alpha = 1.0 / weight
        delta = value - self.mean
        mean = self.mean + alpha * delta
        variance = (1.0 - alpha) * (self.variance + alpha * delta * delta)
        return Moments(mean=mean, variance=variance, weight=weight)


@dataclass(frozen=True, slots=True)
class Lognormal:
    """A positive duration's distribution, by the mean and deviation of its logarithm."""

    mu: float
    sigma: float

    @classmethod
    def from_mean_sd(cls, mean: float, sd: float) -> Lognormal:
        """The lognormal with this mean and standard deviation (seconds)."""
        sigma2 = math.log(1.0 + (sd / mean) ** 2)
        return cls(mu=math.log(mean) - sigma2 / 2.0, sigma=math.sqrt(sigma2))

    @property
    def mean(self) -> float:
        """The expected duration."""
        return math.exp(self.mu + self.sigma * self.sigma / 2.0)

    def cdf(self, seconds: float) -> float:
        """Probability the duration is at most ``seconds``."""
        if seconds <= 0.0:
            return 0.0
        return 0.5 * (1.0 + math.erf((math.log(seconds) - self.mu) / (self.sigma * _SQRT2)))

    def quantile_z(self, z: float) -> float:
        """The duration at ``z`` standard deviations of the logarithm from its mean."""
        return math.exp(self.mu + self.sigma * z)


def _log_moments(dist: Lognormal, weight: float) -> Moments:
    return Moments(mean=dist.mu, variance=dist.sigma * dist.sigma, weight=weight)


# --- the facts the estimator learns from ---------------------------------------------


@dataclass(frozen=True, slots=True)
class DialPlaced:
    """The gateway started a dial for the campaign."""

    day: date


@dataclass(frozen=True, slots=True)
class DialResolved:
    """A dial ended: answered live, by a machine, busy, not answered, or failed.

    ``seconds`` runs from the dial to the outcome as the dialer learns it (for an answer,
    once answering-machine detection has decided).
    """

    day: date
    outcome: DialOutcome
    seconds: float


@dataclass(frozen=True, slots=True)
class LiveAnswerConnected:
    """A live answer reached an agent, ``wait_seconds`` after it was answered."""

    day: date
    wait_seconds: float


@dataclass(frozen=True, slots=True)
class ComplianceAbandon:
    """A live answer found no agent within the connect window and was abandoned."""

    day: date


@dataclass(frozen=True, slots=True)
class AmdFalsePositive:
    """A person was taken for an answering machine and hung up on (known or estimated).

    Ofcom counts these as abandoned calls; the US rule does not.
    """

    day: date


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A campaign call with an agent ended after ``talk_seconds``."""

    talk_seconds: float


@dataclass(frozen=True, slots=True)
class WrapUpEnded:
    """An agent finished the wrap-up of a campaign call after ``wrap_up_seconds``."""

    wrap_up_seconds: float


Observation = (
    DialPlaced
    | DialResolved
    | LiveAnswerConnected
    | ComplianceAbandon
    | AmdFalsePositive
    | CallEnded
    | WrapUpEnded
)


# --- the abandonment ledger ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayCounts:
    """One calendar day's compliance counts for a campaign."""

    day: date
    dials: int = 0
    live_answers: int = 0
    abandons: int = 0
    amd_false_positives: int = 0

    def us_rate(self) -> float:
        """Abandons over live answers (0 when nothing was answered)."""
        return _ratio(self.abandons, self.live_answers)

    def ofcom_rate(self) -> float:
        """Abandons plus AMD false positives over live answers plus AMD false positives."""
        return _ratio(
            self.abandons + self.amd_false_positives,
            self.live_answers + self.amd_false_positives,
        )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass(frozen=True, slots=True)
class AbandonmentLedger:
    """A campaign's abandonment per day and over the rolling 30 days.

    Formulas (both computable from the same counts):

    * **US** (FTC/FCC telemarketing rule): ``abandons / live answers``, where a live answer
      is a call answered by a person as the dialer saw it (answering-machine detection said
      "live") and an abandon is such an answer not connected to an agent within the
      connect window (2 s).
    * **Ofcom** (UK): ``(abandons + AMD false positives) / (live answers + AMD false
      positives)``: people hung up on because detection took them for a machine count as
      abandoned calls too, and as live calls in the denominator.

    The rolling window is the given day and the 29 calendar days before it; days with no
    calls count as zero.
    """

    days: tuple[DayCounts, ...] = ()

    def _with(self, day: date, **deltas: int) -> AbandonmentLedger:
        days = self.days
        if days and days[-1].day == day:
            last = days[-1]
            updated = replace(last, **{k: getattr(last, k) + v for k, v in deltas.items()})
            return AbandonmentLedger(days=(*days[:-1], updated))
        oldest = day - timedelta(days=ROLLING_DAYS - 1)
        kept = tuple(d for d in days if d.day >= oldest and d.day != day)
        return AbandonmentLedger(days=(*kept, DayCounts(day=day, **deltas)))

    def record(self, observation: Observation) -> AbandonmentLedger:
        """The ledger with one more fact counted (facts without a count leave it as is)."""
        match observation:
            case DialPlaced(day=day):
                return self._with(day, dials=1)
            case DialResolved(day=day, outcome=DialOutcome.LIVE):
                return self._with(day, live_answers=1)
            case ComplianceAbandon(day=day):
                return self._with(day, abandons=1)
            case AmdFalsePositive(day=day):
                return self._with(day, amd_false_positives=1)
            case _:
                return self

    def day(self, day: date) -> DayCounts:
        """The counts of one day (zero when nothing happened that day)."""
        for counts in self.days:
            if counts.day == day:
                return counts
        return DayCounts(day=day)

    def rolling(self, day: date) -> DayCounts:
        """The counts of the 30 days ending on ``day``, summed (``day`` names the window)."""
        oldest = day - timedelta(days=ROLLING_DAYS - 1)
        window = [d for d in self.days if oldest <= d.day <= day]
        return DayCounts(
            day=day,
            dials=sum(d.dials for d in window),
            live_answers=sum(d.live_answers for d in window),
            abandons=sum(d.abandons for d in window),
            amd_false_positives=sum(d.amd_false_positives for d in window),
        )


# --- the estimator -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EstimatorSettings:
    """How quickly the estimates forget (half-lives, in observations)."""

    outcome_half_life: float = 250.0
    duration_half_life: float = 150.0


@dataclass(frozen=True, slots=True)
class Priors:
    """Where a cold start begins, and how many observations each guess is worth.

    Conservative on purpose: more live answers, sooner, and agents busy for longer than a
    typical campaign — the first dials then leave agents waiting rather than customers.
    """

    live_probability: float = 0.5
    live_answer_seconds: Lognormal = field(
        default_factory=lambda: Lognormal.from_mean_sd(10.0, 5.0)
    )
    other_outcome_seconds: Lognormal = field(
        default_factory=lambda: Lognormal.from_mean_sd(20.0, 8.0)
    )
    talk_seconds: Lognormal = field(default_factory=lambda: Lognormal.from_mean_sd(240.0, 200.0))
    wrap_up_seconds: Lognormal = field(default_factory=lambda: Lognormal.from_mean_sd(45.0, 30.0))
    weight: float = 20.0


@dataclass(frozen=True, slots=True)
class PacingEstimates:
    """What the pacing needs to know, at one moment: the distributions and the ledger."""

    live_probability: float
    live_answer_seconds: Lognormal
    other_outcome_seconds: Lognormal
    talk_seconds: Lognormal
    wrap_up_seconds: Lognormal
    ledger: AbandonmentLedger


def _lognormal(moments: Moments) -> Lognormal:
    return Lognormal(mu=moments.mean, sigma=max(math.sqrt(moments.variance), 0.05))


@dataclass(frozen=True, slots=True)
class PacingEstimator:
    """The campaign's recent answer probability, durations and abandonment ledger.

    Feed it every fact with ``observe``; read ``estimates()`` when pacing.
    """

    settings: EstimatorSettings
    live: Moments
    live_seconds: Moments
    other_seconds: Moments
    talk: Moments
    wrap_up: Moments
    ledger: AbandonmentLedger = AbandonmentLedger()
    observations: int = 0

    @classmethod
    def cold(
        cls, priors: Priors | None = None, settings: EstimatorSettings | None = None
    ) -> PacingEstimator:
        """An estimator that has seen nothing yet: its figures are the priors."""
        p = priors or Priors()
        return cls(
            settings=settings or EstimatorSettings(),
            live=Moments(p.live_probability, 0.0, p.weight),
            live_seconds=_log_moments(p.live_answer_seconds, p.weight),
            other_seconds=_log_moments(p.other_outcome_seconds, p.weight),
            talk=_log_moments(p.talk_seconds, p.weight),
            wrap_up=_log_moments(p.wrap_up_seconds, p.weight),
        )

    def observe(self, observation: Observation) -> PacingEstimator:
        """The estimator with one more fact learned."""
        s = self.settings
        ledger = self.ledger.record(observation)
        count = self.observations + 1
        match observation:
            case DialResolved(outcome=outcome, seconds=seconds):
                is_live = outcome is DialOutcome.LIVE
                live = self.live.observe(1.0 if is_live else 0.0, s.outcome_half_life)
                log_seconds = math.log(max(seconds, 0.1))
                if is_live:
                    return replace(
                        self,
                        live=live,
                        live_seconds=self.live_seconds.observe(log_seconds, s.duration_half_life),
                        ledger=ledger,
                        observations=count,
                    )
                return replace(
                    self,
                    live=live,
                    other_seconds=self.other_seconds.observe(log_seconds, s.duration_half_life),
                    ledger=ledger,
                    observations=count,
                )
            case CallEnded(talk_seconds=seconds):
                talk = self.talk.observe(math.log(max(seconds, 1.0)), s.duration_half_life)
                return replace(self, talk=talk, observations=count)
            case WrapUpEnded(wrap_up_seconds=seconds):
                wrap = self.wrap_up.observe(math.log(max(seconds, 0.5)), s.duration_half_life)
                return replace(self, wrap_up=wrap, observations=count)
            case _:
                return replace(self, ledger=ledger, observations=count)

    def estimates(self) -> PacingEstimates:
        """The current figures, as distributions."""
        return PacingEstimates(
            live_probability=min(max(self.live.mean, 0.0), 1.0),
            live_answer_seconds=_lognormal(self.live_seconds),
            other_outcome_seconds=_lognormal(self.other_seconds),
            talk_seconds=_lognormal(self.talk),
            wrap_up_seconds=_lognormal(self.wrap_up),
            ledger=self.ledger,
        )


# --- snapshots ---------------------------------------------------------------------------

SNAPSHOT_VERSION = 1


def snapshot(estimator: PacingEstimator) -> dict[str, object]:
    """What the estimator has learned, as plain JSON values (floats exact), so a restarted
    dialer paces as before. The settings are not in it: they are configuration."""

    def moments(m: Moments) -> list[float]:
        return [m.mean, m.variance, m.weight]

    return {
        "version": SNAPSHOT_VERSION,
        "live": moments(estimator.live),
        "live_seconds": moments(estimator.live_seconds),
        "other_seconds": moments(estimator.other_seconds),
        "talk": moments(estimator.talk),
        "wrap_up": moments(estimator.wrap_up),
        "ledger": [
            [d.day.isoformat(), d.dials, d.live_answers, d.abandons, d.amd_false_positives]
            for d in estimator.ledger.days
        ],
        "observations": estimator.observations,
    }


class SnapshotError(ValueError):
    """A snapshot this code cannot read (another version, or damaged)."""


def from_snapshot(
    data: dict[str, Any], settings: EstimatorSettings | None = None
) -> PacingEstimator:
    """The estimator a :func:`snapshot` was taken of (``SnapshotError`` if unreadable)."""
    if data.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"pacing snapshot version {data.get('version')!r} is not readable")
    try:

        def moments(key: str) -> Moments:
            mean, variance, weight = (float(v) for v in data[key])
            return Moments(mean=mean, variance=variance, weight=weight)

        return PacingEstimator(
            settings=settings or EstimatorSettings(),
            live=moments("live"),
            live_seconds=moments("live_seconds"),
            other_seconds=moments("other_seconds"),
            talk=moments("talk"),
            wrap_up=moments("wrap_up"),
            ledger=AbandonmentLedger(
                days=tuple(
                    DayCounts(date.fromisoformat(day), int(a), int(b), int(c), int(d))
                    for day, a, b, c, d in data["ledger"]
                )
            ),
            observations=int(data["observations"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"pacing snapshot is damaged: {exc}") from exc
