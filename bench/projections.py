"""Read-model projection: throughput, freshness at 1,000 events/s, and report speed.

Run from the checkout:  .venv/bin/python bench/projections.py

It starts its own embedded PostgreSQL and Tansu broker in a temporary directory (removed
afterwards), migrates a gateway store, an acd store and the stats projector's schema as
``plateau migrate`` would, and prints:

1. events/s applied by the projection (``apply_batch_once`` of 500 events at a time, as
   the consumer applies a poll, + read-model writes, one consumer, in one process), on
   synthetic calls of about a dozen events each;
2. event-to-read-model latency p50/p99 at an offered 1,000 events/s, then 300/s, once one
   call's events went through (start-up excluded): events are appended to the two stores
   at that pace, the relays publish them, the projector's
   consumer applies them, and each event's latency runs from its ``recorded_at`` to the commit of
   its read-model change (seen by a listener on a per-event notification);
3. a 30-day report (per queue and 15-minute interval, then per local hour and day:
   offered, answered, abandoned, ASA and AHT inputs..., with the metrics) over one million
   synthetic calls, read as the access gateway reads it (``report_rows``, the JSON rows of
   the report, as the reader role under row-level security), next to the same question
   answered by a plain aggregate query over the call records in the same database. The
   million calls are generated in SQL, and their interval measures derived from them in
   SQL with the definitions of docs/metrics.md (counts at the answer or abandon, whole
   per-call times), binned by the interval of arrival like the plain query, and rolled up
   like the projection's roll-ups, so both queries describe the same calls. The loaded
   tables are vacuumed and checkpointed before the clock starts, as long-settled report
   data would be (otherwise the timings race the autovacuum of the million fresh rows).
   It then prints what a client waits for: the access gateway's answer to the 15-minute
   report of every queue (its ``ReadModels`` and ``report_body``, without the HTTP
   exchange), next to the row path it replaced (the row query with the metric functions,
   one pydantic row each) in the same run.

``BENCH_SKIP_REPORT=1`` skips the third part, ``BENCH_ONLY_REPORT=1`` runs only it.

Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from plateau_access_gateway.adapters.read_models import _REPORT_PLANNING as REPORT_PLANNING
from plateau_access_gateway.adapters.read_models import ReadModels, Row
from plateau_access_gateway.domain.principal import Principal, Role, Via
from plateau_access_gateway.domain.reports import Granularity
from plateau_access_gateway.entrypoints.http_reports import Metrics, Report, ReportRow, report_body
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import agents as ag
from plateau_contracts.events import calls as cl
from plateau_contracts.events import routing as rt
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer, apply_batch_once
from plateau_runtime.db import Connection, connect, create_pool
from plateau_runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn
from plateau_runtime.outbox import OutboxRelay
from plateau_runtime.services import service
from plateau_runtime.testing import as_stored
from plateau_stats_projector.adapters.read_models import Projection

THROUGHPUT_CALLS = 1500
#: Offered rates of the freshness phase: the target, then one the projector sustains here.
RATES = (1000, 300)
LATENCY_SECONDS = 20.0
TICK = 0.05  # the pacer appends rate * TICK events every TICK seconds
REPORT_CALLS = 1_000_000
#: Members of the projector's group in the freshness phase (the service's default is 1).
CONSUMERS = int(os.environ.get("BENCH_CONSUMERS", "1"))
#: Events per transaction in the throughput phase (the consumer's largest poll).
BATCH = 500
QUEUES = 20
AGENTS = 200
RUNS = 7


def call_events(n: int, start: datetime, tag: str) -> list[tuple[str, datetime, StreamedEvent]]:
    """One answered (or, every seventh, abandoned) inbound call: ('gw'|'acd', at, event)."""
    cid, queue, agent = f"{tag}c{n}", f"q{n % QUEUES}", f"{tag}a{n % AGENTS}"
    s = timedelta(seconds=1)
    out: list[tuple[str, datetime, StreamedEvent]] = [
        (
            "gw",
            start,
            cl.CallOffered(
                call_id=cid,
                ani="+242066000001",
                dnis="+242053000100",
                trunk="mno",
                sip_call_id=cid,
            ),
        ),
        ("acd", start, rt.CallQueued(queue_id=queue, call_id=cid, direction="inbound", priority=0)),
    ]
    if n % 7 == 0:
        out.append(
            ("acd", start + 9 * s, rt.CallAbandoned(queue_id=queue, call_id=cid, waited_ms=9000))
        )
        out.append(
            (
                "gw",
                start + 9 * s,
                cl.CallEnded(
                    call_id=cid, cause=cl.EndCause.CALLER_HANGUP, ended_by=cl.EndedBy.CALLER
                ),
            )
        )
        return out
    out += [
        (
            "acd",
            start + 4 * s,
            rt.CallAgentReserved(
                queue_id=queue,
                call_id=cid,
                agent_id=agent,
                extension="1001",
                waited_ms=4000,
                strategy="longest_idle",
                candidates=(),
                decision="bench",
            ),
        ),
        ("acd", start + 4 * s, ag.AgentReserved(agent_id=agent, call_id=cid, queue_id=queue)),
        (
            "gw",
            start + 6 * s,
            cl.CallConnected(call_id=cid, agent_id=agent, extension="1001", queue_id=queue),
        ),
        (
            "acd",
            start + 6 * s,
            ag.AgentBecameBusy(agent_id=agent, call_id=cid, queue_id=queue, direction="inbound"),
        ),
        ("gw", start + 60 * s, cl.CallHeld(call_id=cid, agent_id=agent, via="api")),
        ("gw", start + 80 * s, cl.CallResumed(call_id=cid, agent_id=agent, via="api")),
        (
            "gw",
            start + 200 * s,
            cl.CallEnded(
                call_id=cid,
                cause=cl.EndCause.AGENT_HANGUP,
                ended_by=cl.EndedBy.AGENT,
                agent_id=agent,
            ),
        ),
        ("acd", start + 200 * s, ag.WrapUpStarted(agent_id=agent, call_id=cid, queue_id=queue)),
        (
            "acd",
            start + 230 * s,
            ag.WrapUpCompleted(agent_id=agent, call_id=cid, completed_by="agent"),
        ),
        ("acd", start + 230 * s, ag.AgentBecameAvailable(agent_id=agent)),
    ]
    return out


def envelopes(events: list[tuple[str, datetime, StreamedEvent]], tenant: str) -> list[Envelope]:
    return as_stored(tenant, [(at, event) for _, at, event in sorted(events, key=lambda e: e[1])])


async def migrated(admin_dsn: str, schema: str, migrations: Path | None) -> str:
    service_schema = ServiceSchema(schema, migrations)
    password = secrets.token_urlsafe(16)
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, service_schema, password)
    finally:
        await admin.close()
    return role_dsn(admin_dsn, service_schema, password)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def throughput(pool: asyncpg.Pool) -> None:
    start = datetime(2026, 5, 4, 7, tzinfo=UTC)
    events: list[tuple[str, datetime, StreamedEvent]] = []
    for n in range(THROUGHPUT_CALLS):
        events += call_events(n, start + timedelta(seconds=17 * n), "t")
    batch = envelopes(events, "bench-throughput")
    projection = Projection()
    async with pool.acquire() as conn:
        started = time.perf_counter()
        for first in range(0, len(batch), BATCH):
            await apply_batch_once(
                conn, "throughput", batch[first : first + BATCH], projection.apply_batch
            )
        elapsed = time.perf_counter() - started
    print(
        f"1. projection: {len(batch):,} events ({THROUGHPUT_CALLS:,} calls) applied in "
        f"{elapsed:.1f} s = {len(batch) / elapsed:,.0f} events/s "
        f"(one consumer, {BATCH} events per transaction: apply_batch_once + call "
        "recomputation + interval and roll-up upserts)"
    )


async def latency(
    pool: asyncpg.Pool,
    projector_dsn: str,
    stores: dict[str, tuple[EventStore, asyncpg.Pool]],
    bootstrap: str,
) -> None:
    projection = Projection()
    applied: dict[str, float] = {}
    recorded: dict[str, float] = {}

    async def handler(conn: Connection, batch: Sequence[Envelope]) -> None:
        await projection.apply_batch(conn, batch)
        await conn.execute(
            "select pg_notify('bench_applied', e) from unnest($1::text[]) as e",
            [str(envelope.event_id) for envelope in batch],
        )

    listener = await asyncpg.connect(projector_dsn)
    await listener.add_listener(
        "bench_applied", lambda *args: applied.setdefault(args[3], time.time())
    )
    stop = asyncio.Event()
    # CONSUMERS members of one group share the partitions, as replicas would.
    consumers = [
        EventConsumer(
            pool, bootstrap, consumer="bench-latency", topics=list(Topic), batch_handler=handler
        )
        for _ in range(CONSUMERS)
    ]
    relays = [OutboxRelay(store, store_pool, bootstrap) for store, store_pool in stores.values()]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    tasks += [asyncio.create_task(c.run(stop)) for c in consumers]
    try:
        # Warm up before the clock starts: the consumer joins its group, and each relay starts
        # its producer and learns the partitions with its first publication (1 to 2 s once,
        # which is start-up, not freshness). One call's events, applied, and it is ready.
        warm_up: dict[str, float] = {}
        for side in ("gw", "acd"):
            appends = [
                StreamAppend(e.stream_id("bench-latency"), [NewEvent(e, tenant="bench-latency")])
                for s, _, e in call_events(0, datetime.now(UTC), "warm-up")
                if s == side
            ]
            for stored in await stores[side][0].append_many(appends):
                warm_up[str(stored.envelope.event_id)] = stored.envelope.recorded_at.timestamp()
        deadline = time.perf_counter() + 60
        while not warm_up.keys() <= applied.keys():
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.1)
        for number, rate in enumerate(RATES):
            await paced(stores, rate, f"l{number}", recorded, applied)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await listener.close()


async def paced(
    stores: dict[str, tuple[EventStore, asyncpg.Pool]],
    rate: int,
    tag: str,
    recorded: dict[str, float],
    applied: dict[str, float],
) -> None:
    """Append synthetic calls' events at ``rate`` for a while; print their freshness."""
    recorded.clear()
    per_tick = int(rate * TICK)
    pending: list[tuple[str, StreamedEvent]] = []
    n = 0
    sent = 0
    began = time.perf_counter()
    next_tick = began
    while time.perf_counter() - began < LATENCY_SECONDS:
        while len(pending) < per_tick:
            now = datetime.now(UTC)
            pending += [(side, event) for side, _, event in call_events(n, now, tag)]
            n += 1
        tick, pending = pending[:per_tick], pending[per_tick:]
        for side in ("gw", "acd"):
            appends = [
                StreamAppend(e.stream_id("bench-latency"), [NewEvent(e, tenant="bench-latency")])
                for s, e in tick
                if s == side
            ]
            if appends:
                for stored in await stores[side][0].append_many(appends):
                    recorded[str(stored.envelope.event_id)] = (
                        stored.envelope.recorded_at.timestamp()
                    )
        sent += len(tick)
        next_tick += TICK
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    offered_rate = sent / (time.perf_counter() - began)
    deadline = time.perf_counter() + 120
    # Poll until every event is applied (bounded): the listener fills ``applied``.
    while len(applied.keys() & recorded.keys()) < len(recorded):
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.2)
    drained = time.perf_counter() - began
    waits = [(applied[k] - recorded[k]) * 1000 for k in recorded if k in applied]
    print(
        f"2. freshness: {sent:,} events offered at {offered_rate:,.0f} events/s for "
        f"{LATENCY_SECONDS:.0f} s through 2 stores, 2 relays, the broker and {CONSUMERS} "
        "projector consumer(s); "
        f"{len(waits):,} applied ({len(waits) / drained:,.0f}/s until drained)"
    )
    if waits:
        print(
            f"   event recorded -> read model committed: p50 {percentile(waits, 0.5):,.0f} ms, "
            f"p99 {percentile(waits, 0.99):,.0f} ms, max {max(waits):,.0f} ms"
        )


# The access gateway's question: every queue's (or one queue's) 15-minute intervals over
# 30 days, each with its object of measures (offered, answered, abandoned, ASA and AHT
# inputs, service-level histogram...) and its metrics (service level under the queue's
# threshold, ASA, AHT, abandonment...), as the JSON rows the gateway serves.
REPORT_READ_MODEL = """
select r from report_rows('queue', {ids}, $1, $2, '{grain}') r
"""

#: Where each call lands, per granularity: its 15-minute interval (UTC), or the local hour
#: or day of the tenant's zone, as the roll-ups key them.
PERIOD_OF_CALL = {
    "15min": "date_bin('15 minutes', started_at, timestamptz '2000-01-01')",
    "hour": "date_trunc('hour', started_at at time zone '{zone}') at time zone '{zone}'",
    "day": "date_trunc('day', started_at at time zone '{zone}') at time zone '{zone}'",
}
ZONE = "Africa/Brazzaville"

REPORT_CALL_RECORDS = """
select queues[1] as queue_id,
       {period} as period_start,
       count(*) as offered,
       count(*) filter (where outcome = 'answered') as answered,
       count(*) filter (where outcome = 'abandoned') as abandoned,
       sum(wait_ms) filter (where outcome = 'answered') as answer_wait_ms,
       count(*) filter (where outcome = 'answered' and wait_ms <= 20000) as within_20s,
       count(*) filter (where outcome = 'answered') as handled,
       sum(talk_ms + hold_ms + wrap_up_ms) filter (where outcome = 'answered') as handle_ms
from call_records
where started_at >= $1 and started_at < $2 {one_queue}
group by 1, 2
"""

GENERATE_CALLS = """
insert into call_records (tenant, call_id, direction, started_at, answered_at, ended_at, outcome,
    end_cause, queues, agents, wait_ms, talk_ms, hold_ms, wrap_up_ms, transfers)
select 'bench-report', 'c' || n, 'inbound', $1::timestamptz + random() * interval '30 days',
       null, null, case when n % 7 = 0 then 'abandoned' else 'answered' end, null,
       array['q' || (n % {queues})], array['a' || (n % 200)], (random() * 60000)::bigint,
       (random() * 600000)::bigint, (random() * 30000)::bigint, (random() * 90000)::bigint, 0
from generate_series(1, {calls}) n
"""

# The interval measures of those calls, as the projection defines them (docs/metrics.md),
# binned by the interval of arrival like the plain query below, so that both answer
# exactly the same question over the same calls.
DERIVE_MEASURES = """
insert into intervals (tenant, dimension, dimension_id, interval_start, measures)
select tenant, dimension, dimension_id, interval_start, jsonb_object_agg(measure, value)
from (
    select tenant, 'queue' as dimension, queues[1] as dimension_id,
           date_bin('15 minutes', started_at, timestamptz '2000-01-01') as interval_start,
           m.measure, sum(m.value) as value
    from call_records,
    lateral (values ('offered', 1::bigint),
                    ('answered', (outcome = 'answered')::int::bigint),
                    ('abandoned', (outcome = 'abandoned')::int::bigint),
                    ('answer_wait_ms', case when outcome = 'answered' then wait_ms else 0 end),
                    ('answered_wait_le_20s',
                     (outcome = 'answered' and wait_ms <= 20000)::int::bigint),
                    ('handled', (outcome = 'answered')::int::bigint),
                    ('handle_ms',
                     case when outcome = 'answered' then talk_ms + hold_ms + wrap_up_ms
                     else 0 end),
                    ('talk_ms', talk_ms), ('wait_ms', wait_ms)) as m(measure, value)
    where tenant = 'bench-report'
    group by 1, 2, 3, 4, 5
    having sum(m.value) <> 0
) per_measure
group by 1, 2, 3, 4
"""

# Their roll-ups per local hour, day and month, summed from the intervals as the
# projection's roll-ups are.
DERIVE_ROLLUPS = """
insert into rollups (tenant, grain, dimension, dimension_id, period_start, measures)
select tenant, g.grain, dimension, dimension_id,
       date_trunc(g.grain, interval_start at time zone '{zone}') at time zone '{zone}',
       measures_sum(measures)
from intervals, (values ('hour'), ('day'), ('month')) as g(grain)
where tenant = 'bench-report'
group by 1, 2, 3, 4, 5
"""


async def report(admin_dsn: str, schema: str, reader_dsn: str) -> None:
    start = datetime(2026, 4, 1, tzinfo=UTC) - timedelta(hours=1)
    end = start + timedelta(days=30)
    admin = await connect(admin_dsn)
    try:
        await admin.execute(f"set search_path = {schema}")
        began = time.perf_counter()
        await admin.execute(GENERATE_CALLS.format(calls=REPORT_CALLS, queues=QUEUES), start)
        await admin.execute(DERIVE_MEASURES)
        await admin.execute(DERIVE_ROLLUPS.format(zone=ZONE))
        # VACUUM runs outside a transaction block: one statement per call. It also sets the
        # visibility map and hint bits that a first read of fresh rows would otherwise write.
        for table in ("call_records", "intervals", "rollups"):
            await admin.execute(f"vacuum (analyze) {table}")
        await admin.execute("checkpoint")
        rows = await admin.fetchval("select count(*) from intervals where tenant = 'bench-report'")
        print(
            f"3. report data: {REPORT_CALLS:,} calls over 30 days in {QUEUES} queues generated "
            f"({rows:,} interval rows) in {time.perf_counter() - began:.0f} s"
        )
    finally:
        await admin.close()
    reader = await asyncpg.connect(reader_dsn)
    try:
        await reader.execute(f"set search_path = {schema}")
        for grain, label, ids, clause, arg in (
            ("15min", "all queues", "null", "", None),
            ("15min", "one queue", "array[$3]", "and queues[1] = $3", "q7"),
            ("hour", "all queues", "null", "", None),
            ("day", "all queues", "null", "", None),
        ):
            timings: dict[str, list[float]] = {"read model": [], "call records": []}
            counts: dict[str, int] = {}
            for _ in range(RUNS):
                for name, query in (
                    ("read model", REPORT_READ_MODEL.format(ids=ids, grain=grain)),
                    (
                        "call records",
                        REPORT_CALL_RECORDS.format(
                            one_queue=clause, period=PERIOD_OF_CALL[grain].format(zone=ZONE)
                        ),
                    ),
                ):
                    params = [start, end] + ([arg] if arg else [])
                    async with reader.transaction():
                        await reader.execute(
                            "select set_config('plateau.tenant', 'bench-report', true)"
                        )
                        if name == "read model":  # planned as the gateway plans it
                            await reader.execute(REPORT_PLANNING)
                        began = time.perf_counter()
                        result = await reader.fetch(query, *params)
                        timings[name].append((time.perf_counter() - began) * 1000)
                    counts[name] = len(result)
            ours, plain = (statistics.median(timings[k]) for k in ("read model", "call records"))
            print(
                f"   30-day report by {grain}, {label}: read model {ours:,.0f} ms "
                f"({counts['read model']:,} rows), plain aggregate over call records "
                f"{plain:,.0f} ms ({counts['call records']:,} rows); "
                f"median of {RUNS}, reader role under row-level security"
            )
    finally:
        await reader.close()
    await gateway_answer(reader_dsn, schema, start, end)


# The report query of the access gateway before migrations/0012, the baseline: the metric
# functions applied to each row of report_intervals as it is read.
ROW_PATH_REPORT = """
select r.dimension, r.dimension_id, r.period_start, r.measures,
       coalesce(q.service_level_threshold_s, 20) as service_level_threshold_s,
       service_level(r.measures, coalesce(q.service_level_threshold_s, 20)) as service_level,
       asa_ms(r.measures) as asa_ms, aht_ms(r.measures) as aht_ms,
       abandonment_rate(r.measures) as abandonment_rate, occupancy(r.measures) as occupancy,
       compliance_abandonment_rate(r.measures) as compliance_abandonment_rate
from report_intervals($1, $2, $3, $4, $5) r
left join queue_settings q on r.dimension = 'queue' and q.queue_id = r.dimension_id
order by r.dimension_id, r.period_start
"""


def row_path_body(
    rows: list[Row], granularity: Granularity, start: datetime, end: datetime
) -> bytes:
    """The report endpoint's answer as it was made before the database made its rows
    (migrations/0012): one pydantic row per read-model row, then the model serialised.
    The baseline; it leaves out FastAPI's validation of the returned model, which the old
    endpoint also paid."""

    def number(value: object) -> float | None:
        return None if value is None else float(value)  # type: ignore[arg-type]

    return (
        Report(
            dimension="queue",
            granularity=Granularity.QUARTER_HOUR,
            start=start,
            end=end,
            formula_versions={},
            computed_up_to=[],
            rows=[
                ReportRow(
                    id=r["dimension_id"],
                    period_start=r["period_start"],
                    measures=r["measures"],
                    metrics=Metrics(
                        service_level=number(r["service_level"]),
                        service_level_threshold_s=r["service_level_threshold_s"],
                        asa_ms=number(r["asa_ms"]),
                        aht_ms=number(r["aht_ms"]),
                        abandonment_rate=number(r["abandonment_rate"]),
                        occupancy=number(r["occupancy"]),
                        compliance_abandonment_rate=number(r["compliance_abandonment_rate"]),
                    ),
                )
                for r in rows
            ],
        )
        .model_dump_json(by_alias=True)
        .encode()
    )


async def gateway_answer(reader_dsn: str, schema: str, start: datetime, end: datetime) -> None:
    """The body of GET /api/v1/reports/queues over the 30 days, made by the access gateway's
    own code (ReadModels as the reader role, in a snapshot with the provenance, then
    report_body, every piece it streams), without the HTTP exchange around it; next to the
    row path it replaced, in the same run. Hour is the endpoint's default granularity."""
    pool = await create_pool(reader_dsn, max_size=1)
    read_models = ReadModels(pool, schema=schema, reader_role=f"plateau_{schema}_reader")
    analyst = Principal("bench-report", "bench", "bench", Role.CLIENT_ANALYST, Via.SESSION, "-")
    print("   the access gateway's answer (GET /api/v1/reports/queues over the 30 days):")
    try:
        for granularity, label, ids in (
            (Granularity.QUARTER_HOUR, "all queues", None),
            (Granularity.QUARTER_HOUR, "one queue", ["q7"]),
            (Granularity.HOUR, "all queues", None),
            (Granularity.DAY, "all queues", None),
        ):
            timings: dict[str, list[float]] = {"json": [], "rows": []}
            size = 0
            # One path after the other: the row path's million objects would otherwise be
            # freed during the next measurement of the other.
            for _ in range(RUNS):
                began = time.perf_counter()
                size = 0
                async with read_models.report_json(
                    analyst, "queue", ids, start, end, granularity.value
                ) as report:
                    async for piece in report_body("queue", granularity, start, end, report):
                        size += len(piece)  # what the endpoint streams, to its last byte
                timings["json"].append((time.perf_counter() - began) * 1000)
            for _ in range(RUNS):
                began = time.perf_counter()
                async with read_models.scoped("bench-report", snapshot=True) as conn:
                    args = ("queue", ids, start, end, granularity.value)
                    rows = [dict(r) async for r in conn.cursor(ROW_PATH_REPORT, *args)]
                row_path_body(rows, granularity, start, end)
                timings["rows"].append((time.perf_counter() - began) * 1000)
            ours, before = (statistics.median(timings[k]) for k in ("json", "rows"))
            print(
                f"     {granularity.value}, {label} ({size / 1e6:.2f} MB of JSON): "
                f"{ours:,.0f} ms; the row path it replaced (the row query with the metric "
                f"functions, a pydantic row each): {before:,.0f} ms, {before / ours:.1f}x; "
                f"median of {RUNS}"
            )
    finally:
        await pool.close()


async def run_bench(pg: EmbeddedPostgres, broker: EmbeddedBroker) -> None:
    spec = service("stats-projector")
    projector_dsn = await migrated(pg.admin_dsn, "stats_bench", spec.migrations_dir())
    stores: dict[str, tuple[EventStore, asyncpg.Pool]] = {}
    for side in ("gw", "acd"):
        dsn = await migrated(pg.admin_dsn, f"{side}_bench", None)
        store_pool = await create_pool(dsn, max_size=4)
        stores[side] = (EventStore(store_pool, f"{side}_bench"), store_pool)
    reader_password = secrets.token_urlsafe(12)
    admin = await connect(pg.admin_dsn)
    try:
        await admin.execute(f"create role bench_reader login password '{reader_password}'")
        await admin.execute("grant plateau_stats_bench_reader to bench_reader")
        server = await admin.fetchval("show server_version")
    finally:
        await admin.close()
    reader_dsn = projector_dsn.replace(
        projector_dsn.split("//")[1].split("@")[0], f"bench_reader:{reader_password}"
    )
    print(f"PostgreSQL {server} (embedded); Tansu broker (memory storage)")
    pool = await create_pool(projector_dsn, max_size=8)
    try:
        if not os.environ.get("BENCH_ONLY_REPORT"):
            await throughput(pool)
            await latency(pool, projector_dsn, stores, broker.bootstrap)
        if not os.environ.get("BENCH_SKIP_REPORT"):
            await report(pg.admin_dsn, "stats_bench", reader_dsn)
    finally:
        await pool.close()
        for _, store_pool in stores.values():
            await store_pool.close()


def main() -> None:
    print(f"$ {os.path.relpath(sys.executable)} {os.path.relpath(__file__)}")
    python = platform.python_version()
    print(f"machine: {platform.platform()}, nproc {os.cpu_count()}, Python {python}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before the run (1, 5, 15 min): {load}")
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
    work.chmod(0o755)
    pg = EmbeddedPostgres(work / "pg" / "data", free_port())
    broker = EmbeddedBroker(free_port(), work / "logs" / "broker.log")
    started = time.perf_counter()
    try:
        pg.start()
        broker.start()
        asyncio.run(run_bench(pg, broker))
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"total run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
