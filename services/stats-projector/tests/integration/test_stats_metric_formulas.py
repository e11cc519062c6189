"""The SQL metric formulas readers call (migrations 0005, 0011, 0012) against the domain's, over
every service-level threshold a queue can be configured with and over measure objects in
which any histogram bucket may be missing: the inlined versions give the same figures."""

from __future__ import annotations

import random
from fractions import Fraction

import asyncpg
import pytest

from plateau_stats_projector.domain import metrics

pytestmark = pytest.mark.integration

THRESHOLDS = [*range(-1, 302), 400, 2**31 - 1]


def measure_objects() -> list[dict[str, int]]:
    """Objects with each bucket, answered, abandoned and short abandons present or not."""
    draw = random.Random(5)
    names = [metrics.answer_bucket_measure(bound) for bound in metrics.SERVICE_LEVEL_THRESHOLDS_S]
    names += [metrics.Measure.ANSWERED, metrics.Measure.ABANDONED]
    names += [metrics.Measure.ABANDONED_SHORT]
    objects: list[dict[str, int]] = [{}, {name: 1 for name in names}]
    for _ in range(40):
        objects.append({n: draw.randint(1, 10**6) for n in names if draw.random() < 0.6})
    return objects


async def test_answered_within_and_service_level_match_the_domain_at_every_threshold(
    service_pool: asyncpg.Pool,
) -> None:
    objects = measure_objects()
    rows = await service_pool.fetch(
        "select o.n, t.threshold, answered_within(o.m, t.threshold) as within, "
        "       service_level(o.m, t.threshold) as sl "
        "from unnest($1::jsonb[]) with ordinality as o(m, n), unnest($2::int[]) as t(threshold)",
        objects,  # the pool's codec writes each as a JSON object
        THRESHOLDS,
    )
    assert len(rows) == len(objects) * len(THRESHOLDS)
    for row in rows:
        measures = objects[row["n"] - 1]
        threshold = row["threshold"]
        assert row["within"] == metrics.answered_within(measures, threshold), (measures, threshold)
        figure = metrics.service_level(measures, threshold).value
        if figure is None:
            assert row["sl"] is None, (measures, threshold)
        else:  # numeric division keeps far more significant digits than a report shows
            assert abs(Fraction(row["sl"]) - figure) <= abs(figure) / 10**15, (measures, threshold)


async def test_answered_within_a_threshold_that_is_not_set_counts_the_first_bucket(
    service_pool: asyncpg.Pool,
) -> None:
    first = metrics.answer_bucket_measure(metrics.SERVICE_LEVEL_THRESHOLDS_S[0])
    within = await service_pool.fetchval(
        "select answered_within($1::jsonb, null)",
        {first: 3, metrics.answer_bucket_measure(10): 4},
    )
    assert within == 3


async def test_a_ratio_has_no_value_when_its_denominator_is_zero_or_unknown(
    service_pool: asyncpg.Pool,
) -> None:
    row = await service_pool.fetchrow(
        "select ratio(1, 0) as zero, ratio(1, null) as unknown, ratio(0, 4) as nothing, "
        "       ratio(3, 4) as three_quarters"
    )
    assert row is not None
    assert (row["zero"], row["unknown"]) == (None, None)
    assert (Fraction(row["nothing"]), Fraction(row["three_quarters"])) == (0, Fraction(3, 4))


async def test_the_reports_stored_service_levels_are_service_level_at_every_threshold(
    service_pool: asyncpg.Pool,
) -> None:
    # What report_rows (0012) serves for a queue: the element of the row's stored service
    # levels its threshold's slot names, as the JSON number of service_level itself.
    objects = measure_objects()
    rows = await service_pool.fetch(
        "select o.n, t.threshold, service_level(o.m, t.threshold) as sl, "
        "       (report_service_levels(o.m))[service_level_slot(t.threshold)] as stored, "
        "       report_number(service_level(o.m, t.threshold)) as computed "
        "from unnest($1::jsonb[]) with ordinality as o(m, n), unnest($2::int[]) as t(threshold)",
        objects,
        THRESHOLDS,
    )
    assert len(rows) == len(objects) * len(THRESHOLDS)
    undefined = 0
    for row in rows:
        where = (objects[row["n"] - 1], row["threshold"])
        assert row["stored"] == row["computed"], where
        if row["sl"] is None:
            assert row["stored"] == "null", where
            undefined += 1
        else:  # the shortest text of the numeric's nearest double, as the row path has it
            assert float(row["stored"]) == float(row["sl"]), where
            assert repr(float(row["sl"])).removesuffix(".0") == row["stored"], where
    assert 0 < undefined < len(rows)
