"""The demo's traffic model: when callers call, how long they wait before giving up, how long
agents talk, and what the customers of the outbound campaign do. Pure and seeded: every
draw comes from the ``random.Random`` it is given.

A contact centre's inbound day has a morning peak (about 10:00), a dip over lunch, an
afternoon peak (about 15:00, a little lower) and a quiet night. The demo runs a compressed
day: ``day_minutes`` real minutes per simulated day, starting at ``start_hour``, so a
newcomer sees both peaks within half an hour, and calls arrive at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

MORNING_PEAK = 10.0
AFTERNOON_PEAK = 15.0
NIGHT_LEVEL = 0.04


def daily_intensity(hour: float) -> float:
    """The relative call arrival rate at ``hour`` (0-24, local): 1 at the morning peak."""
    h = hour % 24.0
    morning = math.exp(-(((h - MORNING_PEAK) / 1.4) ** 2) / 2)
    afternoon = 0.85 * math.exp(-(((h - AFTERNOON_PEAK) / 1.8) ** 2) / 2)
    return min(1.0, NIGHT_LEVEL + (1 - NIGHT_LEVEL) * max(morning, afternoon))


@dataclass(frozen=True)
class TrafficSettings:
    """The rhythm of the demo (``plateau demo`` options)."""

    peak_calls_per_minute: float = 10.0
    day_minutes: float = 24.0
    start_hour: float = 9.5
    talk_median_s: float = 25.0
    talk_sigma: float = 0.5
    patience_median_s: float = 35.0
    patience_sigma: float = 0.6
    ring_s: tuple[float, float] = (1.0, 4.0)
    auto_answer_s: tuple[float, float] = (0.1, 0.4)
    wrap_up_s: tuple[float, float] = (3.0, 8.0)
    pause_probability: float = 0.12
    pause_s: tuple[float, float] = (15.0, 45.0)
    pause_codes: tuple[str, ...] = ("break", "lunch", "training", "meeting")

    def simulated_hour(self, elapsed_s: float) -> float:
        """The hour of the simulated day ``elapsed_s`` real seconds after the start."""
        return (self.start_hour + elapsed_s / (self.day_minutes * 60.0) * 24.0) % 24.0

    def rate_per_second(self, elapsed_s: float) -> float:
        """The arrival rate (calls per real second) ``elapsed_s`` after the start."""
        hour = self.simulated_hour(elapsed_s)
        return self.peak_calls_per_minute / 60.0 * daily_intensity(hour)


class TrafficModel:
    """Draws of the demo's random quantities from one seeded generator."""

    def __init__(self, settings: TrafficSettings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng

    def next_arrival(self, elapsed_s: float) -> float:
        """When (seconds since the start) the next call arrives after ``elapsed_s``: a
        non-homogeneous Poisson process drawn by thinning against the peak rate."""
        peak = self.settings.peak_calls_per_minute / 60.0
        if peak <= 0:
            return math.inf
        t = elapsed_s
        while True:
            t += self.rng.expovariate(peak)
            if self.rng.random() * peak <= self.settings.rate_per_second(t):
                return t

    def arrivals(self, until_s: float) -> list[float]:
        """Every arrival in ``[0, until_s)`` (for tests and the docs' figures)."""
        times: list[float] = []
        t = 0.0
        while (t := self.next_arrival(t)) < until_s:
            times.append(t)
        return times

    def _lognormal(self, median: float, sigma: float) -> float:
        return self.rng.lognormvariate(math.log(median), sigma)

    def talk_s(self) -> float:
        """How long an agent talks (lognormal around the median)."""
        return min(self._lognormal(self.settings.talk_median_s, self.settings.talk_sigma), 600.0)

    def patience_s(self) -> float:
        """How long a caller waits for an agent before hanging up."""
        value = self._lognormal(self.settings.patience_median_s, self.settings.patience_sigma)
        return min(max(value, 3.0), 600.0)

    def ring_s(self, auto_answer: bool = False) -> float:
        """How long an agent lets the softphone ring before answering (a phone asked to
        answer by itself, as for a dialled customer, only takes its own moment)."""
        return self.rng.uniform(
            *(self.settings.auto_answer_s if auto_answer else self.settings.ring_s)
        )

    def wrap_up_s(self) -> float:
        return self.rng.uniform(*self.settings.wrap_up_s)

    def pause_after_call(self) -> str | None:
        """A pause code when the agent takes a pause after this call, else None."""
        if self.rng.random() < self.settings.pause_probability:
            return self.rng.choice(self.settings.pause_codes)
        return None

    def pause_s(self) -> float:
        return self.rng.uniform(*self.settings.pause_s)

    def customer_answer(self) -> CustomerAnswer:
        """What a customer of the outbound campaign does when the phone rings."""
        return CustomerAnswer(
            self.rng.choices(
                [Outcome.ANSWER, Outcome.BUSY, Outcome.NO_ANSWER], weights=[0.5, 0.3, 0.2]
            )[0],
            ring_s=self.rng.uniform(2.0, 8.0),
            talk_s=self.rng.uniform(5.0, 20.0),
        )


class Outcome(StrEnum):
    ANSWER = "answer"
    BUSY = "busy"
    NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class CustomerAnswer:
    """A customer's reaction to an outbound call: answer (and hang up after ``talk_s``),
    busy, or let it ring until the dialer gives up."""

    outcome: Outcome
    ring_s: float
    talk_s: float


def customer_numbers(count: int, rng: random.Random) -> list[str]:
    """Fictitious Republic of Congo mobile numbers (06 6xx xx xx / 05 5xx xx xx), unique."""
    numbers: set[str] = set()
    while len(numbers) < count:
        prefix = rng.choice(["066", "055"])
        numbers.add(f"+242{prefix}{rng.randrange(10**6):06d}")
    return sorted(numbers)


def customer_file(count: int, seed: int = 242) -> bytes:
    """The demo campaign's customer file (CSV, ``;``-separated, UTF-8), the same every time
    so that importing it again records nothing."""
    rng = random.Random(seed)
    first = ["Aline", "Bienvenu", "Carine", "Didier", "Estelle", "Fabrice", "Grâce", "Hervé"]
    last = ["Mabiala", "Okemba", "Nkounkou", "Ngoma", "Moukala", "Loemba", "Massamba"]
    lines = ["référence;nom;téléphone"]
    for index, number in enumerate(customer_numbers(count, rng), start=1):
        name = f"{rng.choice(first)} {rng.choice(last)}"
        local = number[4:]  # the national form keeps its leading 0: 06 612 34 56
        spaced = f"{local[:2]} {local[2:5]} {local[5:7]} {local[7:]}"
        lines.append(f"DEMO-{index:04d};{name};{spaced}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
