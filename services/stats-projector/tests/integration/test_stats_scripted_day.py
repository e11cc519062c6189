"""A scripted day sent through the real event stores, relays and broker to the projector:
every interval and roll-up matches an oracle computed from the script itself; replaying the
same events, or replaying the stores one after the other (streams out of order with one
another), changes nothing, row for row."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import asyncpg
import pytest
from stats_scripted_day import (
    Day,
    build_day,
    expected_intervals,
    expected_rollups,
    tagged,
    utc,
    when,
)

from plateau_contracts.envelope import Envelope
from plateau_runtime.consumer import apply_batch_once, apply_once
from plateau_runtime.db import create_pool
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend
from plateau_runtime.outbox import OutboxRelay
from plateau_runtime.testing import MigratedSchema, make_schema
from plateau_stats_projector.adapters.read_models import Projection
from plateau_stats_projector.domain import metrics
from plateau_stats_projector.domain.intervals import to_ms
from plateau_stats_projector.entrypoints.consumer import CONSUMER, projection_consumer
from plateau_stats_projector.rebuild import rebuild

pytestmark = pytest.mark.integration

READ_MODELS = (
    "call_facts",
    "call_contributions",
    "intervals",
    "rollups",
    "call_records",
    "queue_waiting",
    "agent_status",
    "agent_state_spans",
    "queue_settings",
    "campaign_status",
    "campaign_dialled_contacts",
    "compliance_ledger",
)


@dataclass
class RecordedDay:
    """The day recorded in a gateway store and an acd store, as those services would."""

    day: Day
    tenant: str
    tag: str
    gateway: EventStore
    acd: EventStore
    pools: list[asyncpg.Pool]

    async def envelopes(self, store: EventStore) -> list[Envelope]:
        return [stored.envelope async for stored in store.iterate()]

    async def heads(self) -> dict[str, int]:
        heads: dict[str, int] = {}
        for store in (self.gateway, self.acd):
            for envelope in await self.envelopes(store):
                heads[envelope.stream] = max(heads.get(envelope.stream, 0), envelope.stream_version)
        return heads


async def record(
    store: EventStore, events: list[tuple[int, object]], tenant: str, tag: str
) -> None:
    """Append in time order (the order the services would have recorded them)."""
    ordered = sorted(events, key=lambda pair: pair[0])
    for start in range(0, len(ordered), 250):
        batch = []
        for at, event in ordered[start : start + 250]:
            data = tagged(event, tag)  # type: ignore[arg-type]
            batch.append(
                StreamAppend(
                    data.stream_id(tenant), [NewEvent(data, tenant=tenant, occurred_at=when(at))]
                )
            )
        await store.append_many(batch)


@pytest.fixture
async def recorded(admin_dsn: str) -> AsyncIterator[RecordedDay]:
    tag = f"-{secrets.token_hex(3)}"
    tenant = f"t{tag}"
    day = build_day()
    gateway_schema = await make_schema(admin_dsn, prefix="gw")
    acd_schema = await make_schema(admin_dsn, prefix="acd")
    pools = [await create_pool(s.dsn, max_size=4) for s in (gateway_schema, acd_schema)]
    gateway = EventStore(pools[0], gateway_schema.schema)
    acd = EventStore(pools[1], acd_schema.schema)
    await record(gateway, day.gateway, tenant, tag)
    await record(acd, day.acd, tenant, tag)
    yield RecordedDay(day, tenant, tag, gateway, acd, pools)
    for pool in pools:
        await pool.close()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 240
) -> None:
    """Poll until ``condition`` holds; a guard against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.2)


async def snapshot(pool: asyncpg.Pool, tenant: str) -> dict[str, list[tuple[object, ...]]]:
    """Every read-model row of a tenant, table by table, in a stable order."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for table in READ_MODELS:
        rows = await pool.fetch(f"select * from {table} where tenant = $1", tenant)
        out[table] = sorted((tuple(r.values()) for r in rows), key=repr)
    return out


async def intervals_of(
    pool: asyncpg.Pool, tenant: str, tag: str
) -> dict[tuple[str, str, int, str], int]:
    rows = await pool.fetch(
        "select dimension, dimension_id, interval_start, measure, value from interval_measures "
        "where tenant = $1",
        tenant,
    )
    return {
        (
            r["dimension"],
            r["dimension_id"].removesuffix(tag),
            to_ms(r["interval_start"]),
            r["measure"],
        ): r["value"]
        for r in rows
    }


async def rollups_of(
    pool: asyncpg.Pool, tenant: str, tag: str
) -> dict[tuple[str, str, str, datetime, str], int]:
    rows = await pool.fetch(
        "select grain, dimension, dimension_id, period_start, measure, value from rollup_measures "
        "where tenant = $1",
        tenant,
    )
    return {
        (
            r["grain"],
            r["dimension"],
            r["dimension_id"].removesuffix(tag),
            r["period_start"],
            r["measure"],
        ): r["value"]
        for r in rows
    }


async def replay(pool: asyncpg.Pool, consumer: str, envelopes: list[Envelope]) -> int:
    """Apply envelopes through ``apply_once``, as the consumer would; how many took effect."""
    projection = Projection(notify=False)
    applied = 0
    async with pool.acquire() as conn:
        for envelope in envelopes:

            async def effect(c: object, e: Envelope = envelope) -> None:
                await projection.apply(c, e)  # type: ignore[arg-type]

            applied += await apply_once(conn, consumer, envelope, effect)
    return applied


def assert_matches_oracle(actual: dict, expected: dict, what: str) -> None:
    missing = {k: v for k, v in expected.items() if actual.get(k) != v}
    extra = {k: v for k, v in actual.items() if k not in expected}
    assert not missing and not extra, (
        f"{what}: {len(missing)} differ or are missing, e.g. "
        f"{sorted(missing.items(), key=repr)[:5]} (actual "
        f"{[actual.get(k) for k in sorted(missing, key=repr)[:5]]}); {len(extra)} unexpected, e.g. "
        f"{sorted(extra.items(), key=repr)[:5]}"
    )


async def test_a_scripted_day_through_the_broker_matches_the_oracle_and_a_rebuild(
    recorded: RecordedDay,
    broker: EmbeddedBroker,
    service_pool: asyncpg.Pool,
    admin_dsn: str,
    service_schema: MigratedSchema,
) -> None:
    tenant, tag = recorded.tenant, recorded.tag
    consumer_name = f"stats{tag}"
    heads = await recorded.heads()
    consumer = projection_consumer(
        service_pool, broker.bootstrap, Projection(), consumer=consumer_name
    )
    stop = asyncio.Event()
    relays = [
        OutboxRelay(store, pool, broker.bootstrap, idle_poll=0.05)
        for store, pool in zip((recorded.gateway, recorded.acd), recorded.pools, strict=True)
    ]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    tasks.append(asyncio.create_task(consumer.run(stop)))

    async def caught_up() -> bool:
        rows = await service_pool.fetch(
            "select stream, version from consumer_checkpoints where consumer = $1", consumer_name
        )
        done = {r["stream"]: r["version"] for r in rows}
        return all(done.get(stream, 0) >= version for stream, version in heads.items())

    try:
        await wait_for(caught_up, "the projector to apply the whole day")
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    expected = expected_intervals(recorded.day)
    assert_matches_oracle(await intervals_of(service_pool, tenant, tag), expected, "intervals")
    assert_matches_oracle(
        await rollups_of(service_pool, tenant, tag), expected_rollups(expected), "roll-ups"
    )
    # The relays' headers say where each event is recorded: the read models include each
    # store up to its head, and name the head's chain hash. (The broker is shared with other
    # tests, whose stores' events the projector applies too: only this day's stores count.)
    marks = await service_pool.fetch(
        "select store, position, chain_hash from consumer_store_marks "
        "where consumer = $1 and store = any($2::text[])",
        consumer_name,
        [recorded.gateway.schema, recorded.acd.schema],
    )
    assert {(m["store"], m["position"], m["chain_hash"]) for m in marks} == {
        (store.schema, report.head_position, report.head_hash)
        for store in (recorded.gateway, recorded.acd)
        for report in [await store.verify()]
    }
    records = await service_pool.fetch(
        "select call_id, outcome from call_records where tenant = $1", tenant
    )
    assert len(records) == len(recorded.day.calls)
    outcomes = {r["call_id"].removesuffix(tag): r["outcome"] for r in records}
    assert (outcomes["o1"], outcomes["o3"], outcomes["t1"], outcomes["v1"]) == (
        "compliance_abandoned",
        "no_answer",
        "answered",
        "abandoned",
    )
    assert (
        await service_pool.fetchval("select count(*) from queue_waiting where tenant = $1", tenant)
        == 0
    )
    incremental = await snapshot(service_pool, tenant)

    # Replaying every event again, through the checkpoints or around them, changes nothing.
    everything = await recorded.envelopes(recorded.gateway) + await recorded.envelopes(recorded.acd)
    assert await replay(service_pool, consumer_name, everything) == 0
    async with service_pool.acquire() as conn:
        projection = Projection(notify=False)
        for envelope in everything:
            async with conn.transaction():
                await projection.apply(conn, envelope)
    assert await snapshot(service_pool, tenant) == incremental

    # A rebuild into fresh tables, one store after the other (the acd's first), gives the
    # same rows as the incremental build.
    fresh = await make_schema(admin_dsn, service_schema.service.migrations_dir, prefix="rb")
    rebuilt_pool = await create_pool(fresh.dsn, max_size=2)
    try:
        acd_first = await recorded.envelopes(recorded.acd) + await recorded.envelopes(
            recorded.gateway
        )
        assert await replay(rebuilt_pool, "rebuild", acd_first) == len(acd_first)
        assert await snapshot(rebuilt_pool, tenant) == incremental
    finally:
        await rebuilt_pool.close()


async def test_streams_interleaved_in_any_order_give_the_oracles_figures(
    recorded: RecordedDay, service_pool: asyncpg.Pool
) -> None:
    """Without the broker: per-stream order kept, streams shuffled against one another."""
    by_stream: dict[str, list[Envelope]] = {}
    for store in (recorded.gateway, recorded.acd):
        for envelope in await recorded.envelopes(store):
            by_stream.setdefault(envelope.stream, []).append(envelope)
    rng = random.Random(7)
    order = [s for s, events in by_stream.items() for _ in events]
    rng.shuffle(order)
    cursors = dict.fromkeys(by_stream, 0)
    shuffled = []
    for stream in order:
        shuffled.append(by_stream[stream][cursors[stream]])
        cursors[stream] += 1
    assert await replay(service_pool, "shuffled", shuffled) == len(shuffled)
    expected = expected_intervals(recorded.day)
    assert_matches_oracle(
        await intervals_of(service_pool, recorded.tenant, recorded.tag), expected, "intervals"
    )


async def test_a_rebuild_from_the_stores_swaps_in_the_incremental_rows(
    recorded: RecordedDay,
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    admin_dsn: str,
) -> None:
    tenant = recorded.tenant
    everything = await recorded.envelopes(recorded.gateway) + await recorded.envelopes(recorded.acd)
    await replay(service_pool, CONSUMER, sorted(everything, key=lambda e: e.occurred_at))
    incremental = await snapshot(service_pool, tenant)
    checkpoints = await service_pool.fetch(
        "select stream, version from consumer_checkpoints where consumer = $1 order by stream",
        CONSUMER,
    )
    # Damage the read models, as a bug in an older projector version would have.
    await service_pool.execute("update intervals set measures = measures - 'talk_ms'")
    await service_pool.execute("update call_records set outcome = 'lost'")

    report = await rebuild(
        admin_dsn,
        service_schema.schema,
        [recorded.gateway.schema, recorded.acd.schema],
        service_schema.service.migrations_dir,
    )

    assert report.events_read == report.events_applied == len(everything)
    assert report.heads == {
        recorded.gateway.schema: len(recorded.day.gateway),
        recorded.acd.schema: len(recorded.day.acd),
    }
    assert await snapshot(service_pool, tenant) == incremental
    # The rebuilt read models say up to where in each store they were computed.
    provenance = await service_pool.fetch("select * from report_provenance()")
    assert {(p["source"], p["position"], p["chain_head"]) for p in provenance} == {
        (store.schema, report.head_position, report.head_hash)
        for store in (recorded.gateway, recorded.acd)
        for report in [await store.verify()]
    }
    assert (
        await service_pool.fetch(
            "select stream, version from consumer_checkpoints where consumer = $1 order by stream",
            CONSUMER,
        )
        == checkpoints
    )
    # The shadow schema is gone.
    assert (
        await service_pool.fetchval(
            "select count(*) from pg_namespace where nspname = $1",
            f"{service_schema.schema}_rebuild",
        )
        == 0
    )


async def test_a_rebuild_while_the_projector_runs_loses_and_doubles_nothing(
    admin_dsn: str,
    broker: EmbeddedBroker,
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
) -> None:
    """Half the day is projected, then the other half is recorded while a rebuild swaps the
    read models under the running projector: the result is the whole day, exactly. How the
    appends, the live consumer and the swap interleave varies from run to run; whatever
    it is, no event may be lost or counted twice."""
    tag = f"-{secrets.token_hex(3)}"
    tenant = f"t{tag}"
    day = build_day(arrivals=120)
    noon = utc("12:00:00")
    schemas = [await make_schema(admin_dsn, prefix=p) for p in ("gw", "acd")]
    pools = [await create_pool(s.dsn, max_size=4) for s in schemas]
    gateway, acd = (EventStore(p, s.schema) for p, s in zip(pools, schemas, strict=True))
    halves = {
        side: ([e for e in events if e[0] < noon], [e for e in events if e[0] >= noon])
        for side, events in (("gateway", day.gateway), ("acd", day.acd))
    }
    await record(gateway, halves["gateway"][0], tenant, tag)
    await record(acd, halves["acd"][0], tenant, tag)
    consumer_name = f"stats{tag}"
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(OutboxRelay(store, pool, broker.bootstrap, idle_poll=0.05).run(stop))
        for store, pool in ((gateway, pools[0]), (acd, pools[1]))
    ]
    consumer = projection_consumer(
        service_pool, broker.bootstrap, Projection(), consumer=consumer_name
    )
    tasks.append(asyncio.create_task(consumer.run(stop)))

    async def caught_up() -> bool:
        heads: dict[str, int] = {}
        for store in (gateway, acd):
            async for stored in store.iterate():
                heads[stored.envelope.stream] = stored.envelope.stream_version
        rows = await service_pool.fetch(
            "select stream, version from consumer_checkpoints where consumer = $1", consumer_name
        )
        done = {r["stream"]: r["version"] for r in rows}
        return all(done.get(stream, 0) >= version for stream, version in heads.items())

    async def second_half() -> None:
        afternoon = sorted(
            [(at, "gw", e) for at, e in halves["gateway"][1]]
            + [(at, "acd", e) for at, e in halves["acd"][1]],
            key=lambda x: x[0],
        )
        for start in range(0, len(afternoon), 40):
            chunk = afternoon[start : start + 40]
            await record(gateway, [(at, e) for at, side, e in chunk if side == "gw"], tenant, tag)
            await record(acd, [(at, e) for at, side, e in chunk if side == "acd"], tenant, tag)
            await asyncio.sleep(0.05)

    try:
        await wait_for(caught_up, "the morning to be projected")
        await asyncio.gather(
            second_half(),
            rebuild(
                admin_dsn,
                service_schema.schema,
                [gateway.schema, acd.schema],
                service_schema.service.migrations_dir,
                consumer=consumer_name,
            ),
        )
        await wait_for(caught_up, "the afternoon to be projected")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for pool in pools:
            await pool.close()
    expected = expected_intervals(day)
    assert_matches_oracle(await intervals_of(service_pool, tenant, tag), expected, "intervals")
    assert_matches_oracle(
        await rollups_of(service_pool, tenant, tag), expected_rollups(expected), "roll-ups"
    )


async def test_the_sql_formulas_readers_use_give_the_domains_figures(
    recorded: RecordedDay, service_pool: asyncpg.Pool
) -> None:
    everything = await recorded.envelopes(recorded.gateway) + await recorded.envelopes(recorded.acd)
    await replay(service_pool, "formulas", everything)
    rows = await service_pool.fetch(
        "select m, service_level(m, 20) as sl20, service_level(m, 25) as sl25, "
        "service_level(m, 400) as sl400, asa_ms(m) as asa, aht_ms(m) as aht, "
        "abandonment_rate(m) as abandonment, occupancy(m) as occupancy, "
        "compliance_abandonment_rate(m) as compliance "
        "from (select jsonb_object_agg(measure, value) as m from rollup_measures "
        "      where tenant = $1 and grain in ('hour', 'day') "
        "      group by grain, dimension, dimension_id, period_start) r",
        recorded.tenant,
    )
    assert len(rows) > 100
    for row in rows:
        m = row["m"]
        expected = {
            "sl20": metrics.service_level(m, 20),
            "sl25": metrics.service_level(m, 25),
            "sl400": metrics.service_level(m, 400),
            "asa": metrics.asa_ms(m),
            "aht": metrics.aht_ms(m),
            "abandonment": metrics.abandonment_rate(m),
            "occupancy": metrics.occupancy(m),
            "compliance": metrics.compliance_abandonment_rate(m),
        }
        for column, figure in expected.items():
            sql = row[column]
            if figure.value is None:
                assert sql is None, (column, m)
            else:  # numeric division keeps far more significant digits than a report shows
                assert sql is not None, (column, m)
                error = abs(Fraction(sql) - figure.value)
                assert error <= abs(figure.value) / 10**15, (column, m, sql, figure)
    versions = dict(await service_pool.fetch("select metric, version from metric_formulas"))
    assert versions == dict(metrics.FORMULA_VERSIONS)


async def test_two_consumers_at_once_give_the_oracles_figures(
    recorded: RecordedDay, service_pool: asyncpg.Pool
) -> None:
    """As with two replicas sharing the partitions: each stream is applied in order by one
    of two concurrent workers, and the facts of one call are split between them."""
    by_stream: dict[str, list[Envelope]] = {}
    for store in (recorded.gateway, recorded.acd):
        for envelope in await recorded.envelopes(store):
            by_stream.setdefault(envelope.stream, []).append(envelope)
    streams = sorted(by_stream)
    halves = [streams[0::2], streams[1::2]]

    async def worker(mine: list[str]) -> None:
        # Interleave this worker's streams, each in its own order.
        order = [
            e for batch in itertools.zip_longest(*(by_stream[s] for s in mine)) for e in batch if e
        ]
        await replay(service_pool, "pair", order)

    await asyncio.gather(*(worker(half) for half in halves))
    expected = expected_intervals(recorded.day)
    assert_matches_oracle(
        await intervals_of(service_pool, recorded.tenant, recorded.tag), expected, "intervals"
    )


async def test_the_whole_day_in_batches_gives_the_same_rows_as_event_by_event(
    recorded: RecordedDay,
    service_pool: asyncpg.Pool,
    admin_dsn: str,
    service_schema: MigratedSchema,
) -> None:
    """The consumer applies a poll in one transaction: batches of any size, a call's facts
    split between them or all in one, give the rows of one event at a time."""
    everything = await recorded.envelopes(recorded.gateway) + await recorded.envelopes(recorded.acd)
    projection = Projection(notify=False)

    async def in_batches(consumer: str, size: int) -> None:
        async with service_pool.acquire() as conn:
            for first in range(0, len(everything), size):
                batch = everything[first : first + size]
                await apply_batch_once(conn, consumer, batch, projection.apply_batch)

    await in_batches("all-at-once", len(everything))
    whole = await snapshot(service_pool, recorded.tenant)
    # The same events again, in batches of another size, change nothing.
    await in_batches("by-97", 97)
    assert await snapshot(service_pool, recorded.tenant) == whole
    expected = expected_intervals(recorded.day)
    assert_matches_oracle(
        await intervals_of(service_pool, recorded.tenant, recorded.tag), expected, "intervals"
    )
    fresh = await make_schema(admin_dsn, service_schema.service.migrations_dir, prefix="ev")
    one_by_one = await create_pool(fresh.dsn, max_size=2)
    try:
        assert await replay(one_by_one, "each", everything) == len(everything)
        assert await snapshot(one_by_one, recorded.tenant) == whole
    finally:
        await one_by_one.close()


async def test_two_consumers_applying_batches_at_once_give_the_oracles_figures(
    recorded: RecordedDay, service_pool: asyncpg.Pool
) -> None:
    """As two members of the group applying polls at once: batches that share calls,
    queues' and agents' intervals lock them in one order, so neither waits for the other
    forever (a deadlock would fail a batch here)."""
    by_stream: dict[str, list[Envelope]] = {}
    for store in (recorded.gateway, recorded.acd):
        for envelope in await recorded.envelopes(store):
            by_stream.setdefault(envelope.stream, []).append(envelope)
    streams = sorted(by_stream)
    projection = Projection(notify=False)

    async def worker(mine: list[str]) -> None:
        order = [
            e for batch in itertools.zip_longest(*(by_stream[s] for s in mine)) for e in batch if e
        ]
        async with service_pool.acquire() as conn:
            for first in range(0, len(order), 40):
                await apply_batch_once(
                    conn, "pair-of-batches", order[first : first + 40], projection.apply_batch
                )

    await asyncio.gather(worker(streams[0::2]), worker(streams[1::2]))
    expected = expected_intervals(recorded.day)
    assert_matches_oracle(
        await intervals_of(service_pool, recorded.tenant, recorded.tag), expected, "intervals"
    )
    assert_matches_oracle(
        await rollups_of(service_pool, recorded.tenant, recorded.tag),
        expected_rollups(expected),
        "roll-ups",
    )
