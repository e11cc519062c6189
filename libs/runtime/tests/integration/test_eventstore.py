"""The event store against real PostgreSQL: ordering, concurrency, tamper evidence, privilege."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import asyncpg
import pytest

from plateau_contracts.events.calls import CallEnded, EndCause, EndedBy
from plateau_runtime.db import connect
from plateau_runtime.errors import ConcurrencyError
from plateau_runtime.eventstore import NO_STREAM, EventStore, NewEvent, StreamAppend
from plateau_runtime.testing import MigratedSchema, make_schema, offered_call

pytestmark = pytest.mark.integration


offered = offered_call


async def test_append_and_read_a_stream(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    first = await store.append("call-1", [offered(1), offered(2)], expected_version=NO_STREAM)
    second = await store.append("call-1", [offered(3)], expected_version=2)
    events = await store.read_stream("call-1")
    assert [e.envelope.stream_version for e in events] == [1, 2, 3]
    assert [e.position for e in first + second] == [1, 2, 3]
    assert events[0].envelope.data["sip_call_id"] == "sip-1"
    assert events[2].prev_hash == events[1].hash
    assert await store.stream_version("call-1") == 3
    assert await store.stream_version("call-unknown") == 0


async def test_unfinished_streams_are_those_opened_and_never_closed(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    ended = CallEnded(call_id="c-2", cause=EndCause.CALLER_HANGUP, ended_by=EndedBy.CALLER)
    await store.append("call-1", [offered(1)], expected_version=NO_STREAM)
    await store.append("call-2", [offered(2), NewEvent(ended, tenant="acme")])
    await store.append("call-3", [offered(3)], expected_version=NO_STREAM)
    unfinished = await store.unfinished_streams(["call.offered"], ["call.ended"])
    assert unfinished == [("call-1", "acme"), ("call-3", "acme")]
    assert await store.unfinished_streams(["call.originated"], ["call.ended"]) == []


async def test_a_stale_expected_version_is_a_retryable_conflict(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    await store.append("agent-7", [offered(1)], expected_version=NO_STREAM)

    async def command(n: int) -> str:
        try:
            await store.append("agent-7", [offered(n)], expected_version=1)
        except ConcurrencyError as exc:
            assert exc.actual == 2 and exc.expected == 1
            return "conflict"
        return "ok"

    outcomes = await asyncio.gather(*(command(n) for n in range(2, 10)))
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert await store.stream_version("agent-7") == 2
    with pytest.raises(ConcurrencyError):
        await store.append("agent-7", [offered(99)], expected_version=NO_STREAM)


async def test_a_failed_batch_leaves_nothing_behind(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    await store.append("call-a", [offered(1)])
    with pytest.raises(ConcurrencyError):
        await store.append_many(
            [
                StreamAppend("call-b", [offered(2)], NO_STREAM),
                StreamAppend("call-a", [offered(3)], NO_STREAM),
            ]
        )
    assert await store.stream_version("call-b") == 0
    assert (await store.head())[0] == 1


async def test_concurrent_writers_with_late_commits_are_read_exactly_once_in_order(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    """8 writers, 10,000 events, transactions that linger before commit, a reader following
    ``position > last`` the whole time: it must see every event once, in commit order."""
    store = EventStore(service_pool, service_schema.schema)
    writers, per_writer = 8, 1250
    rng = random.Random(4475)
    done = asyncio.Event()

    async def writer(w: int) -> None:
        written = 0
        async with service_pool.acquire() as conn:
            while written < per_writer:
                size = min(rng.randint(1, 40), per_writer - written)
                appends = [
                    StreamAppend(f"call-{w}-{rng.randint(0, 15)}", [offered(written + i)])
                    for i in range(size)
                ]
                async with conn.transaction():
                    await store.append_many(appends, conn=conn)
                    # Hold the transaction open: a late commit is what skips events in a
                    # naive ``position > last`` reader.
                    await asyncio.sleep(rng.random() * 0.004)
                written += size

    seen: list[int] = []

    async def reader() -> None:
        last = 0
        while True:
            finished = done.is_set()
            batch = await store.read_all(last, limit=700)
            for stored in batch:
                seen.append(stored.position)
                last = stored.position
            if finished and not batch:
                return
            if not batch:
                await asyncio.sleep(0.002)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await reading

    total = writers * per_writer
    assert len(seen) == total
    assert seen == list(range(1, total + 1))
    versions: dict[str, list[int]] = defaultdict(list)
    async for stored in store.iterate():
        versions[stored.envelope.stream].append(stored.envelope.stream_version)
    for stream, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), stream
    report = await store.verify()
    assert report.intact and report.events_checked == total and report.head_position == total


async def test_the_verifier_pinpoints_a_tampered_event(
    admin_dsn: str, service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    for n in range(20):
        await store.append(f"call-{n % 3}", [offered(n)])
    head_position, head_hash = await store.head()
    clean = await store.verify()
    assert clean.intact and clean.head_position == head_position == 20
    assert clean.head_hash == head_hash.hex()

    admin = await connect(admin_dsn)
    try:
        await admin.execute(
            f"update {service_schema.schema}.events set data = jsonb_set(data, '{{ani}}', "
            "'\"+33100000000\"') where position = 7"
        )
    finally:
        await admin.close()
    report = await store.verify()
    assert not report.intact
    assert report.first_broken_position == 7
    assert report.events_checked == 6 and report.head_position == 6
    assert "altered" in (report.problem or "")


async def test_a_deleted_event_breaks_the_chain_where_it_was(
    admin_dsn: str, service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    for n in range(10):
        await store.append("call-x", [offered(n)])
    admin = await connect(admin_dsn)
    try:
        await admin.execute(f"delete from {service_schema.schema}.events where position = 4")
    finally:
        await admin.close()
    report = await store.verify()
    assert report.first_broken_position == 4 and "missing" in (report.problem or "")


async def test_the_service_role_can_append_but_never_rewrite_history(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    await store.append("call-1", [offered(1)])
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_pool.execute("update events set tenant = 'other'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_pool.execute("delete from events")


async def test_a_service_role_cannot_read_another_services_schema(
    admin_dsn: str, service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    other = await make_schema(admin_dsn)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await service_pool.fetch(f"select * from {other.schema}.events")


async def test_trying_the_append_lock_fails_at_once_while_an_append_is_in_flight(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    async with service_pool.acquire() as writer, service_pool.acquire() as reader:
        async with writer.transaction():
            await store.append("call-c1", [offered_call(1)], conn=writer)
            async with reader.transaction():
                assert await store.try_lock_appends(reader) is False
        async with reader.transaction():
            assert await store.try_lock_appends(reader) is True
            # Held now: the next writer waits for this transaction.
            async with writer.transaction():
                assert await store.try_lock_appends(writer) is False
