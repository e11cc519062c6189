"""The interval report's JSON, made by the database (``report_rows``, the stats projector's
migrations/0012, from columns it stores when the measures are written), against the metric
functions applied to each row's measures at the time of reading: for a scripted set of
queues (with and without a threshold, ids that JSON must escape), agents and campaigns, at
every granularity, every row the endpoint serves, and every row an export reads, has the
same id, period, measures and metrics, value for value, and the response is a ``Report`` as
the API documents it."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from access_read_harness import World, build_world, tag

from plateau_access_gateway.adapters.read_models import Row
from plateau_access_gateway.domain.principal import Principal, Role, Via
from plateau_access_gateway.domain.reports import REPORT_MEASURES
from plateau_access_gateway.entrypoints.http_reports import Metrics, Report
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, tzinfo=UTC)
#: The measures the metrics read, each present or not in a row (missing counts as 0).
MEASURES = [
    *REPORT_MEASURES,
    *(f"answered_wait_le_{b}s" for b in (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)),
    *(f"state_{s}_ms" for s in ("available", "on_call", "reserved", "wrap_up")),
    "talk_ms",
    "live_answers",
    "compliance_abandons",
]


@pytest.fixture
async def world(
    admin_dsn: str, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[World]:
    async for built in build_world(admin_dsn, service_schema, tmp_path):
        yield built


def measures(draw: random.Random) -> dict[str, int]:
    """A row's measures: any subset, sometimes only what leaves every metric undefined."""
    if draw.random() < 0.1:
        return {"offered": draw.randint(1, 5)}
    return {m: draw.randint(1, 10**7) for m in MEASURES if draw.random() < 0.7}


async def script(world: World, tenant: str, t: str) -> dict[str, list[str]]:
    """Queues with thresholds of 7 s, 25 s, 300 s and none (20 s by default), agents and
    campaigns, with 15-minute intervals over two days and their roll-ups; the ids."""
    draw = random.Random(12)
    ids = {
        "queue": [f"q7{t}", f"q25{t}", f'q"\\é🎧{t}', f"q-unset{t}"],
        "agent": [f"a1{t}", f"a2{t}"],
        "campaign": [f"cmp{t}"],
    }
    thresholds = dict(zip(ids["queue"][:3], (7, 25, 300), strict=True))
    async with world.stats_pool.acquire() as conn:
        await conn.executemany(
            "insert into queue_settings (tenant, queue_id, name, service_level_threshold_s, "
            "service_level_target, required_skills) values ($1, $2, $2, $3, 0.8, '{}')",
            [(tenant, queue, threshold) for queue, threshold in thresholds.items()],
        )
        intervals = [
            (tenant, dimension, ident, START + timedelta(minutes=15 * n), measures(draw))
            for dimension, idents in ids.items()
            for ident in idents
            for n in range(0, 192, 5)  # two days, a row every 75 minutes
        ]
        await conn.executemany(
            "insert into intervals (tenant, dimension, dimension_id, interval_start, measures) "
            "values ($1, $2, $3, $4, $5)",
            intervals,
        )
        # Roll-ups as the projection sums them: the intervals of each local period.
        for grain in ("hour", "day", "month"):
            await conn.execute(
                "insert into rollups (tenant, grain, dimension, dimension_id, period_start, "
                "measures) "
                "select tenant, $2, dimension, dimension_id, date_trunc($2, interval_start "
                "at time zone 'Africa/Brazzaville') at time zone 'Africa/Brazzaville', "
                "measures_sum(measures) from intervals where tenant = $1 group by 1, 2, 3, 4, 5",
                tenant,
                grain,
            )
    return ids


# The metric functions (migrations 0005, 0011) over report_intervals' rows, with the
# queue's threshold: the figures the stored columns must give.
ORACLE = """
select r.dimension, r.dimension_id, r.period_start, r.measures,
       coalesce(q.service_level_threshold_s, 20) as service_level_threshold_s,
       service_level(r.measures, coalesce(q.service_level_threshold_s, 20)) as service_level,
       asa_ms(r.measures) as asa_ms, aht_ms(r.measures) as aht_ms,
       abandonment_rate(r.measures) as abandonment_rate, occupancy(r.measures) as occupancy,
       compliance_abandonment_rate(r.measures) as compliance_abandonment_rate
from report_intervals($1, null, $2, $3, $4) r
left join queue_settings q on r.dimension = 'queue' and q.queue_id = r.dimension_id
order by r.dimension_id, r.period_start
"""


def expected(row: Row) -> dict[str, Any]:
    """A row as the report shows it: metrics as JSON numbers (the numeric's nearest
    double), a service level and threshold for queues only."""

    def number(value: Decimal | None) -> float | None:
        return None if value is None else float(value)

    queue = row["dimension"] == "queue"
    return {
        "id": row["dimension_id"],
        "period_start": row["period_start"],
        "measures": row["measures"],
        "metrics": {
            "service_level": number(row["service_level"]) if queue else None,
            "service_level_threshold_s": row["service_level_threshold_s"] if queue else None,
            "asa_ms": number(row["asa_ms"]),
            "aht_ms": number(row["aht_ms"]),
            "abandonment_rate": number(row["abandonment_rate"]),
            "occupancy": number(row["occupancy"]),
            "compliance_abandonment_rate": number(row["compliance_abandonment_rate"]),
        },
    }


def exported(row: Row) -> dict[str, Any]:
    """A row of ``ReadModels.report`` (what the exports read) in the report's shape."""
    return {
        "id": row["dimension_id"],
        "period_start": row["period_start"],
        "measures": row["measures"],
        "metrics": {name: row[name] for name in Metrics.model_fields},
    }


async def test_the_reports_json_rows_are_the_row_querys_figures_at_every_granularity(
    world: World,
) -> None:
    t = tag()
    tenant = f"json{t}"
    ids = await script(world, tenant, t)
    other = f"other{t}"
    await script(world, other, t)  # the same ids in another tenant: never in the answer
    await world.sign_in("a", tenant)
    analyst = Principal(tenant, "a", "a", Role.CLIENT_ANALYST, Via.SESSION, "s")
    # From the day before: March's month starts at 23:00 UTC on the last day of February.
    begin, end = START - timedelta(days=1), START + timedelta(days=3)
    period = {"from": begin.isoformat(), "to": end.isoformat()}
    seen: set[tuple[str, bool]] = set()
    async with world.client("a") as http:
        for kind, dimension in (
            ("queues", "queue"),
            ("agents", "agent"),
            ("campaigns", "campaign"),
        ):
            for granularity in ("15min", "hour", "day", "month"):
                answer = await http.get(
                    f"/api/v1/reports/{kind}", params={**period, "granularity": granularity}
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"] == "application/json"
                report = Report.model_validate_json(answer.content)  # the documented shape
                served = answer.json()["rows"]
                async with world.read_models.scoped(tenant) as conn:
                    oracle = await conn.fetch(ORACLE, dimension, begin, end, granularity)
                rows = [expected(dict(r)) for r in oracle]
                async with world.read_models.report(
                    analyst, dimension, None, begin, end, granularity
                ) as reading:
                    exports = [exported(r) async for r in reading.rows]
                assert len(served) == len(rows) == len(exports) > 0, (kind, granularity)
                for got, want, export in zip(served, rows, exports, strict=True):
                    assert datetime.fromisoformat(got["period_start"]) == want["period_start"]
                    assert {**got, "period_start": None} == {**want, "period_start": None}
                    assert export == want
                assert {r.id for r in report.rows} == set(ids[dimension])
                assert report.dimension == dimension and report.granularity == granularity
                seen |= {(k, v is None) for r in served for k, v in r["metrics"].items()}
    # Every metric was compared both with a value and without one.
    assert seen == {(k, undefined) for k in Metrics.model_fields for undefined in (True, False)}


async def test_the_service_level_follows_the_queues_threshold_as_it_is_now(
    world: World,
) -> None:
    t = tag()
    tenant = f"threshold{t}"
    await script(world, tenant, t)
    await world.sign_in("a", tenant)
    params = {
        "from": START.isoformat(),
        "to": (START + timedelta(days=1)).isoformat(),
        "granularity": "day",
        "ids": f"q25{t}",
    }
    async with world.client("a") as http:
        before = (await http.get("/api/v1/reports/queues", params=params)).json()["rows"]
        async with world.stats_pool.acquire() as conn:
            await conn.execute(
                "update queue_settings set service_level_threshold_s = 5 "
                "where tenant = $1 and queue_id = $2",
                tenant,
                f"q25{t}",
            )
        after = (await http.get("/api/v1/reports/queues", params=params)).json()["rows"]
    [day_before], [day_after] = before, after
    assert day_before["metrics"]["service_level_threshold_s"] == 25
    assert day_after["metrics"]["service_level_threshold_s"] == 5
    m = day_after["measures"]
    answered_or_abandoned = (
        m.get("answered", 0) + m.get("abandoned", 0) - m.get("abandoned_short", 0)
    )
    assert day_after["metrics"]["service_level"] == pytest.approx(
        m.get("answered_wait_le_5s", 0) / answered_or_abandoned, rel=1e-15
    )
    assert day_before["metrics"]["service_level"] != day_after["metrics"]["service_level"]


async def test_a_report_left_unread_gives_its_connection_back(world: World) -> None:
    # A client that goes away in the middle of a large report: the copy stops, and the pool
    # is whole again (all of its connections can be taken), the next report served in full.
    t = tag()
    tenant = f"left{t}"
    begin = START
    end = START + timedelta(days=31)
    async with world.stats_pool.acquire() as conn:
        await conn.execute(
            "insert into intervals (tenant, dimension, dimension_id, interval_start, measures) "
            "select $1, 'agent', 'a' || a, $2::timestamptz + n * interval '15 minutes', "
            "jsonb_build_object('handled', 1 + n % 7, 'handle_ms', 1000 * n, "
            "'state_available_ms', 300000, 'state_on_call_ms', 600000) "
            "from generate_series(1, 20) a, generate_series(0, 2975) n",
            tenant,
            begin,
        )
    analyst = Principal(tenant, "a", "a", Role.CLIENT_ANALYST, Via.SESSION, "s")
    for _ in range(3):
        async with world.read_models.report_json(
            analyst, "agent", None, begin, end, "15min"
        ) as report:
            assert await anext(report.rows) == b"["
            assert (await anext(report.rows)).startswith(b'{"id":"a1",')
    size = world.access_pool.get_max_size()
    held = [await world.access_pool.acquire(timeout=5) for _ in range(size)]
    for conn in held:
        await world.access_pool.release(conn)
    async with world.read_models.report_json(analyst, "agent", None, begin, end, "15min") as r:
        pieces = [piece async for piece in r.rows]
    assert len(pieces) > 20  # streamed in pieces, more than are ever held ahead
    assert len(json.loads(b"".join(pieces))) == 20 * 2976
