"""The reader interface the access gateway calls, through the reader role: interval reports
(``report_intervals``) scoped to the session's tenant at every granularity, with measures the
metric functions apply to, and the provenance of the read models (``report_provenance``)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from test_stats_tenant_isolation import project, reader_session, traffic

from plateau_runtime.consumer import StoreMark, record_marks
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Africa/Brazzaville")


def local_midnight() -> datetime:
    """The start of the tenant's local today (where ``traffic`` puts its calls), in UTC."""
    local = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    return local.astimezone(UTC)


async def test_interval_reports_show_the_sessions_tenant_at_every_granularity(
    admin_dsn: str, service_schema: MigratedSchema, service_pool: asyncpg.Pool
) -> None:
    tag = f"-{secrets.token_hex(3)}"
    mine, theirs = f"mine{tag}", f"theirs{tag}"
    await project(service_pool, traffic(mine, f"{tag}-m"))
    await project(service_pool, traffic(theirs, f"{tag}-t"))
    day = local_midnight()
    span = (day - timedelta(days=40), day + timedelta(days=40))
    stored = await service_pool.fetch(
        "select dimension, dimension_id, interval_start, jsonb_object_agg(measure, value) as m "
        "from interval_measures where tenant = $1 group by 1, 2, 3",
        mine,
    )
    reader = await reader_session(admin_dsn, service_schema)
    try:
        # No tenant set: nothing, whatever is asked.
        for granularity in ("15min", "hour", "day", "month"):
            rows = await reader.fetch(
                "select * from report_intervals('queue', null, $1, $2, $3)", *span, granularity
            )
            assert rows == [], granularity
        async with reader.transaction():
            await reader.execute("select set_config('plateau.tenant', $1, true)", mine)
            queue = f"q{tag}-m"
            intervals = await reader.fetch(
                "select * from report_intervals('queue', null, $1, $2, '15min')", *span
            )
            # One interval: both calls entered the queue in the first minutes of the day.
            assert [(r["dimension"], r["dimension_id"]) for r in intervals] == [("queue", queue)]
            assert intervals[0]["period_start"] == day
            measures = intervals[0]["measures"]
            assert (measures["offered"], measures["answered"], measures["handled"]) == (2, 1, 1)
            # Every stored interval measure of the tenant, and only those, per dimension.
            everything = [
                r
                for dimension in ("queue", "agent", "campaign")
                for r in await reader.fetch(
                    "select * from report_intervals($1, null, $2, $3, '15min')",
                    dimension,
                    *span,
                )
            ]
            assert {(r[0], r[1], r[2]): r[3] for r in everything} == {
                (r[0], r[1], r[2]): r[3] for r in stored
            }
            # Roll-ups in the tenant's zone: the local hour, day and month the calls are in.
            for granularity, start in (
                ("hour", day),
                ("day", day),
                ("month", day.astimezone(ZONE).replace(day=1).astimezone(UTC)),
            ):
                rows = await reader.fetch(
                    "select * from report_intervals('queue', $1, $2, $3, $4)",
                    [queue],
                    *span,
                    granularity,
                )
                assert [(r["period_start"], r["measures"]) for r in rows] == [(start, measures)]
            # The metric functions apply to the measures as returned.
            figures = await reader.fetchrow(
                "select service_level(measures, 20) as sl, asa_ms(measures) as asa "
                "from report_intervals('queue', array[$1], $2, $3, 'day')",
                queue,
                *span,
            )
            assert figures is not None and (figures["sl"], figures["asa"]) == (1, 5000)
            # Ids filter; another tenant's ids show nothing; periods are [from, to).
            assert (
                await reader.fetch(
                    "select * from report_intervals('queue', array[$1], $2, $3, '15min')",
                    f"q{tag}-t",
                    *span,
                )
                == []
            )
            assert (
                await reader.fetch(
                    "select * from report_intervals('queue', null, $1, $2, '15min')",
                    day + timedelta(minutes=15),
                    span[1],
                )
                == []
            )
            assert (
                await reader.fetch(
                    "select * from report_intervals('queue', null, $1, $1, '15min')", day
                )
                == []
            )
        for bad in ("('queue', null, now(), now(), 'week')", "('team', null, now(), now(), 'day')"):
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await reader.fetch(f"select * from report_intervals{bad}")
    finally:
        await reader.close()


async def test_the_provenance_of_the_read_models_is_the_same_for_every_reader(
    admin_dsn: str, service_schema: MigratedSchema, service_pool: asyncpg.Pool
) -> None:
    async with service_pool.acquire() as conn:
        await record_marks(
            conn,
            "stats-projector",
            [StoreMark("sip_gateway", 42, "ab" * 32), StoreMark("acd", 7, "cd" * 32)],
        )
        # Another consumer's marks (a benchmark's, a test's) are not the read models'.
        await record_marks(conn, "someone-else", [StoreMark("dialer", 3, "ef" * 32)])
    reader = await reader_session(admin_dsn, service_schema)
    try:
        expected = [("acd", 7, "cd" * 32), ("sip_gateway", 42, "ab" * 32)]
        # Not tenant data: the same rows with or without a tenant set.
        rows = await reader.fetch("select * from report_provenance()")
        assert [(r["source"], r["position"], r["chain_head"]) for r in rows] == expected
        assert all(r["applied_at"] is not None for r in rows)
        async with reader.transaction():
            await reader.execute("select set_config('plateau.tenant', 'acme', true)")
            rows = await reader.fetch("select * from report_provenance()")
            assert [(r["source"], r["position"], r["chain_head"]) for r in rows] == expected
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("delete from consumer_store_marks")
    finally:
        await reader.close()


async def test_report_rows_are_report_intervals_rows_as_json_for_the_sessions_tenant_only(
    admin_dsn: str, service_schema: MigratedSchema, service_pool: asyncpg.Pool
) -> None:
    tag = f"-{secrets.token_hex(3)}"
    mine, theirs = f"mine{tag}", f"theirs{tag}"
    await project(service_pool, traffic(mine, f"{tag}-m"))
    await project(service_pool, traffic(theirs, f"{tag}-t"))
    day = local_midnight()
    span = (day - timedelta(days=40), day + timedelta(days=40))
    reader = await reader_session(admin_dsn, service_schema)
    counted = dict.fromkeys(("queue", "agent", "campaign"), 0)
    try:
        for granularity in ("15min", "hour", "day", "month"):
            # No tenant set: nothing.
            none = await reader.fetch(
                "select r from report_rows('agent', null, $1, $2, $3) r", *span, granularity
            )
            assert none == [], granularity
            async with reader.transaction():
                await reader.execute("select set_config('plateau.tenant', $1, true)", mine)
                for dimension in ("queue", "agent", "campaign"):
                    rows = await reader.fetch(
                        "select r from report_rows($1, null, $2, $3, $4) r",
                        dimension,
                        *span,
                        granularity,
                    )
                    plain = await reader.fetch(
                        "select dimension_id, period_start, measures "
                        "from report_intervals($1, null, $2, $3, $4) "
                        "order by dimension_id, period_start",
                        dimension,
                        *span,
                        granularity,
                    )
                    served = [json.loads(r[0]) for r in rows]
                    assert [
                        (s["id"], datetime.fromisoformat(s["period_start"]), s["measures"])
                        for s in served
                    ] == [(p[0], p[1], p[2]) for p in plain], (dimension, granularity)
                    assert all(s["id"].endswith(f"{tag}-m") for s in served)
                    counted[dimension] += len(served)
        for bad in ("('queue', null, now(), now(), 'week')", "('team', null, now(), now(), 'day')"):
            with pytest.raises(asyncpg.InvalidParameterValueError):
                await reader.fetch(f"select * from report_rows{bad}")
    finally:
        await reader.close()
    assert counted["queue"] > 0 and counted["agent"] > 0, counted
