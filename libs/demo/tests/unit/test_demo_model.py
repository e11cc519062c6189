"""The demo's traffic model: the daily pattern's shape, seeded draws, the customer file."""

from __future__ import annotations

import csv
import io
import random
import statistics

import phonenumbers
import pytest

from plateau_demo.model import (
    AFTERNOON_PEAK,
    MORNING_PEAK,
    Outcome,
    TrafficModel,
    TrafficSettings,
    customer_file,
    daily_intensity,
)

pytestmark = pytest.mark.unit


def test_the_day_has_a_morning_peak_a_lunch_dip_an_afternoon_peak_and_a_quiet_night() -> None:
    by_quarter = {q / 4: daily_intensity(q / 4) for q in range(96)}
    morning = max((h for h in by_quarter if h < 12.5), key=by_quarter.__getitem__)
    afternoon = max((h for h in by_quarter if h > 12.5), key=by_quarter.__getitem__)
    assert morning == MORNING_PEAK and by_quarter[morning] == pytest.approx(1.0)
    assert afternoon == AFTERNOON_PEAK and 0.8 < by_quarter[afternoon] < by_quarter[morning]
    lunch = min(by_quarter[h] for h in by_quarter if MORNING_PEAK < h < AFTERNOON_PEAK)
    assert lunch < 0.6 * by_quarter[afternoon]
    assert max(by_quarter[h] for h in by_quarter if h < 6 or h >= 21) < 0.1
    assert all(0 < v <= 1 for v in by_quarter.values())


def test_the_compressed_day_maps_real_seconds_to_simulated_hours() -> None:
    settings = TrafficSettings(day_minutes=24, start_hour=9.5)
    assert settings.simulated_hour(0) == 9.5
    assert settings.simulated_hour(60) == pytest.approx(10.5)  # an hour a minute
    assert settings.simulated_hour(24 * 60) == pytest.approx(9.5)  # a whole day later


def test_arrivals_are_seeded_and_follow_the_pattern() -> None:
    settings = TrafficSettings(peak_calls_per_minute=30, day_minutes=24, start_hour=0)
    first = TrafficModel(settings, random.Random(7)).arrivals(24 * 60)
    again = TrafficModel(settings, random.Random(7)).arrivals(24 * 60)
    other = TrafficModel(settings, random.Random(8)).arrivals(24 * 60)
    assert first == again and first != other
    assert first == sorted(first)

    def in_hour(hour: int) -> int:  # a simulated hour is a real minute here
        return sum(hour * 60 <= t < (hour + 1) * 60 for t in first)

    assert in_hour(9) + in_hour(10) > 4 * (in_hour(2) + in_hour(3))
    assert in_hour(15) > in_hour(12)
    # At the peak, about the configured rate: a call every few seconds.
    assert 15 <= in_hour(10) <= 45


def test_the_first_calls_come_within_a_minute_by_default() -> None:
    arrivals = TrafficModel(TrafficSettings(), random.Random(1)).arrivals(60)
    assert len(arrivals) >= 3


def test_talk_times_and_patience_are_lognormal_around_their_medians() -> None:
    model = TrafficModel(TrafficSettings(talk_median_s=25, patience_median_s=35), random.Random(3))
    talks = [model.talk_s() for _ in range(4000)]
    patience = [model.patience_s() for _ in range(4000)]
    assert statistics.median(talks) == pytest.approx(25, rel=0.08)
    assert statistics.median(patience) == pytest.approx(35, rel=0.08)
    assert statistics.mean(talks) > statistics.median(talks)  # right-skewed
    assert min(patience) >= 3


def test_pauses_and_customer_answers_draw_every_kind() -> None:
    model = TrafficModel(TrafficSettings(pause_probability=0.5), random.Random(5))
    codes = {model.pause_after_call() for _ in range(400)}
    assert codes == {None, "break", "lunch", "training", "meeting"}
    outcomes = [model.customer_answer().outcome for _ in range(400)]
    assert set(outcomes) == set(Outcome)
    assert outcomes.count(Outcome.ANSWER) > outcomes.count(Outcome.NO_ANSWER)


def test_the_customer_file_is_the_same_every_time_with_valid_congolese_numbers() -> None:
    data = customer_file(50)
    assert data == customer_file(50)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter=";"))
    assert rows[0] == ["référence", "nom", "téléphone"]
    numbers = [phonenumbers.parse(r[2], "CG") for r in rows[1:]]
    assert len(numbers) == 50 == len({phonenumbers.format_number(n, 0) for n in numbers})
    assert all(phonenumbers.is_valid_number(n) for n in numbers)
    assert all(phonenumbers.region_code_for_number(n) == "CG" for n in numbers)
