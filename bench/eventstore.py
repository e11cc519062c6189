"""Event store and outbox relay throughput, against a baseline measured in the same run.

Run from the checkout:  .venv/bin/python bench/eventstore.py

It starts its own embedded PostgreSQL and Tansu broker in a temporary directory (removed
afterwards), migrates a schema as a service would, and prints events per second for:
single-event appends (1 writer, then 8 concurrent writers), batched appends (100 events
per ``append_many``), the same rows written by a plain INSERT without the advisory lock
and hash chain (the baseline, so the price of ordering and tamper evidence is visible),
and the relay publishing the store to the broker. Each phase is bounded in time; the
whole run takes well under a minute. Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

import asyncpg

from plateau_contracts.envelope import new_event_id, utc_now
from plateau_contracts.events.calls import CallOffered
from plateau_runtime.db import connect, create_pool
from plateau_runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from plateau_runtime.eventstore import EventStore, GroupCommitter, NewEvent, StreamAppend
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn
from plateau_runtime.outbox import OutboxRelay

PHASE_SECONDS = 3.0
RELAY_SECONDS = 10.0
WRITERS = 8
CALLERS = 64  # concurrent calls recording facts, for the group-commit line
BATCH = 100
STREAMS = 500
SCHEMA = "bench"


def offered(n: int) -> NewEvent:
    return NewEvent(
        CallOffered(
            call_id=f"c{n}",
            ani="+242066123456",
            dnis="+242053000100",
            trunk="mno",
            sip_call_id=f"sip-{n}",
        ),
        tenant="acme",
    )


async def timed(
    writers: int, step: Callable[[int, int], Awaitable[int]], seconds: float = PHASE_SECONDS
) -> float:
    """Run ``step(writer, i)`` in ``writers`` concurrent loops for ``seconds``; events/s."""
    deadline = time.perf_counter() + seconds
    counts = [0] * writers

    async def loop(w: int) -> None:
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                return
            counts[w] += await step(w, i)

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(writers)))
    return sum(counts) / (time.perf_counter() - started)


class RawWriter:
    """The baseline: the same rows, plain INSERTs, no lock, no head read, no hash."""

    def __init__(self, pool: asyncpg.Pool, table: str) -> None:
        self._pool = pool
        self._table = table
        self._positions = itertools.count(1)
        self._versions: dict[str, int] = {}
        self._hash = bytes(32)

    def _row(self, stream: str, n: int) -> tuple[object, ...]:
        version = self._versions.get(stream, 0) + 1
        self._versions[stream] = version
        now = utc_now()
        data = offered(n).data.model_dump(mode="json")
        event_id: UUID = new_event_id()
        return (
            next(self._positions),
            event_id,
            stream,
            version,
            "call.offered",
            1,
            "acme",
            now,
            now,
            None,
            None,
            None,
            data,
            self._hash,
            self._hash,
        )

    async def insert(self, rows: list[tuple[object, ...]]) -> int:
        columns = list(zip(*rows, strict=True))
        await self._pool.execute(
            f"insert into {self._table} select * from unnest("
            "$1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::int[], "
            "$7::text[], $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::uuid[], "
            "$12::text[], $13::jsonb[], $14::bytea[], $15::bytea[])",
            *columns,
        )
        return len(rows)

    async def one(self, stream: str, n: int) -> int:
        return await self.insert([self._row(stream, n)])

    async def many(self, streams: list[str], n: int) -> int:
        return await self.insert([self._row(s, n + i) for i, s in enumerate(streams)])


def stream_picker(seed: int) -> Callable[[], str]:
    rng = random.Random(seed)
    return lambda: f"call-{rng.randrange(STREAMS)}"


async def run_bench(pg: EmbeddedPostgres, broker: EmbeddedBroker) -> None:
    service = ServiceSchema(SCHEMA, None)
    password = secrets.token_urlsafe(16)
    admin = await connect(pg.admin_dsn)
    try:
        await migrate(admin, service, password)
        await admin.execute(
            f"create table {SCHEMA}.raw_events (like {SCHEMA}.events including all)"
        )
        await admin.execute(f"grant select, insert on {SCHEMA}.raw_events to {service.role}")
        server = await admin.fetchval("show server_version")
        durability = await admin.fetchval(
            "select string_agg(name || '=' || setting, ', ' order by name) from pg_settings "
            "where name in ('fsync', 'synchronous_commit')"
        )
    finally:
        await admin.close()
    print(f"PostgreSQL {server} (embedded, {durability}); Tansu broker (memory storage)")
    print()

    pool = await create_pool(role_dsn(pg.admin_dsn, service, password), max_size=WRITERS + 2)
    try:
        store = EventStore(pool, SCHEMA)
        raw = RawWriter(pool, f"{SCHEMA}.raw_events")
        picks = [stream_picker(w) for w in range(WRITERS)]

        async def append_one(w: int, i: int) -> int:
            return len(await store.append(picks[w](), [offered(i)]))

        async def append_batch(w: int, i: int) -> int:
            appends = [StreamAppend(picks[w](), [offered(i * BATCH + k)]) for k in range(BATCH)]
            return len(await store.append_many(appends))

        async def raw_one(w: int, i: int) -> int:
            return await raw.one(picks[w](), i)

        async def raw_batch(w: int, i: int) -> int:
            return await raw.many([picks[w]() for _ in range(BATCH)], i * BATCH)

        figures = {
            "single": (await timed(1, append_one), await timed(1, raw_one)),
            "writers": (await timed(WRITERS, append_one), await timed(WRITERS, raw_one)),
            "batched": (await timed(1, append_batch), await timed(1, raw_batch)),
        }
        labels = {
            "single": "single-event appends, 1 writer",
            "writers": f"single-event appends, {WRITERS} concurrent writers",
            "batched": f"batched, {BATCH} events per append_many, 1 writer",
        }
        print(f"{'events/s':>52} {'store':>10} {'plain INSERT':>13} {'ratio':>7}")
        for key, (ours, base) in figures.items():
            print(f"{labels[key]:>52} {ours:>10,.0f} {base:>13,.0f} {ours / base:>6.2f}x")
        print(
            "  (store: advisory lock + head read + version check + pydantic envelope + sha256 "
            "chain;\n   plain INSERT: the same columns and indexes, rows built without them)"
        )
        print()

        # Many calls recording facts at once, as the gateway does: each caller appends one
        # event; directly, each is its own transaction; through the committer, concurrent
        # callers share one.
        committer = GroupCommitter(store)
        callers = [stream_picker(1000 + c) for c in range(CALLERS)]

        async def grouped_one(c: int, i: int) -> int:
            return len(await committer.append(callers[c](), [offered(i)]))

        async def direct_one(c: int, i: int) -> int:
            return len(await store.append(callers[c](), [offered(i)]))

        grouped, direct = await timed(CALLERS, grouped_one), await timed(CALLERS, direct_one)
        print(
            f"{CALLERS} concurrent callers, one event each: group commit {grouped:,.0f}/s, "
            f"one transaction each {direct:,.0f}/s, ratio {grouped / direct:.1f}x"
        )
        print()

        head, _ = await store.head()
        relay = OutboxRelay(store, pool, broker.bootstrap)
        stop = asyncio.Event()
        started = time.perf_counter()
        running = asyncio.create_task(relay.run(stop))
        for _ in range(int(RELAY_SECONDS / 0.01)):  # poll the position, up to the bound
            if relay.position >= head or running.done():
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        await running
        print(
            f"relay to broker: {relay.position:,} of {head:,} events in {elapsed:.1f} s = "
            f"{relay.position / elapsed:,.0f} events/s (batch 500, acks=all, first pass "
            "includes connecting and creating the topic)"
        )
    finally:
        await pool.close()


def main() -> None:
    print(f"$ {os.path.relpath(sys.executable)} {os.path.relpath(__file__)}")
    print(
        f"machine: {platform.platform()}, nproc {os.cpu_count()}, "
        f"Python {platform.python_version()}"
    )
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
