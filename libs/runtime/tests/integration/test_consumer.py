"""Idempotent consumption against real PostgreSQL and the real broker: duplicates, replays
and concurrent deliveries apply once; malformed messages are kept and skipped; a failing
handler is retried without losing order; offsets follow committed effects. The same for
batches (``apply_batch_once``, ``EventConsumer(batch_handler=...)``): duplicates within and
across batches, concurrent overlapping batches, a failing batch retried whole."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from structlog.testing import capture_logs

from plateau_contracts.envelope import Envelope, new_event_id, utc_now
from plateau_runtime.bus import ensure_topics
from plateau_runtime.consumer import (
    EventConsumer,
    StoreMark,
    apply_batch_once,
    apply_once,
)
from plateau_runtime.db import Connection, create_pool
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.testing import MigratedSchema, make_schema

pytestmark = pytest.mark.integration

CONSUMER = "projector"


def envelope(stream: str, version: int, **data: Any) -> Envelope:
    now = utc_now()
    return Envelope(
        event_id=new_event_id(),
        type="call.offered",
        schema_version=1,
        stream=stream,
        stream_version=version,
        tenant="acme",
        occurred_at=now,
        recorded_at=now,
        data=data or {"call_id": stream},
    )


@pytest.fixture
async def schema(admin_dsn: str, tmp_path: Path) -> MigratedSchema:
    """A consuming service's schema: the runtime tables plus an ``effects`` table."""
    (tmp_path / "0001_effects.sql").write_text(
        "create table effects (id bigserial primary key, event_id uuid not null, "
        "stream text not null, version integer not null);"
    )
    return await make_schema(admin_dsn, tmp_path, prefix="c")


@pytest.fixture
async def pool(schema: MigratedSchema) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(schema.dsn, max_size=12)
    yield pool
    await pool.close()


def recording(event: Envelope) -> Callable[[Connection], Awaitable[None]]:
    async def effect(conn: Connection) -> None:
        await conn.execute(
            "insert into effects (event_id, stream, version) values ($1, $2, $3)",
            event.event_id,
            event.stream,
            event.stream_version,
        )

    return effect


async def record_effect(conn: Connection, event: Envelope) -> None:
    await recording(event)(conn)


async def effects(pool: asyncpg.Pool) -> list[tuple[str, int]]:
    rows = await pool.fetch("select stream, version from effects order by id")
    return [(r["stream"], r["version"]) for r in rows]


async def checkpoint(pool: asyncpg.Pool, stream: str, consumer: str = CONSUMER) -> int | None:
    return await pool.fetchval(
        "select version from consumer_checkpoints where consumer = $1 and stream = $2",
        consumer,
        stream,
    )


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60
) -> None:
    """Poll until ``condition`` holds; a guard against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def test_duplicates_and_replays_change_nothing(pool: asyncpg.Pool) -> None:
    events = [envelope("call-1", v) for v in (1, 2, 3)]
    async with pool.acquire() as conn:
        assert [await apply_once(conn, CONSUMER, e, recording(e)) for e in events] == [True] * 3
        again = [await apply_once(conn, CONSUMER, e, recording(e)) for e in events]
        assert again == [False] * 3  # a replay from the start
        assert not await apply_once(conn, CONSUMER, events[1], recording(events[1]))
        # Another consumer keeps its own checkpoints.
        assert await apply_once(conn, "auditor", events[0], recording(events[0]))
    assert await effects(pool) == [("call-1", 1), ("call-1", 2), ("call-1", 3), ("call-1", 1)]
    assert await checkpoint(pool, "call-1") == 3
    assert await checkpoint(pool, "call-1", "auditor") == 1


async def test_a_gap_is_applied_and_logged_and_an_older_version_is_then_skipped(
    pool: asyncpg.Pool,
) -> None:
    first, fourth, third = (envelope("call-g", v) for v in (1, 4, 3))
    async with pool.acquire() as conn:
        with capture_logs() as logs:
            assert await apply_once(conn, CONSUMER, first, recording(first))
            assert await apply_once(conn, CONSUMER, fourth, recording(fourth))
            assert not await apply_once(conn, CONSUMER, third, recording(third))
    gaps = [entry for entry in logs if entry["event"] == "consumer.version_gap"]
    assert len(gaps) == 1
    assert gaps[0]["log_level"] == "warning"
    assert gaps[0]["expected_version"] == 2 and gaps[0]["applied_version"] == 4
    assert await effects(pool) == [("call-g", 1), ("call-g", 4)]


async def test_a_failed_effect_records_nothing_and_can_be_retried(pool: asyncpg.Pool) -> None:
    event = envelope("call-f", 1)

    async def half_done_then_fails(conn: Connection) -> None:
        await recording(event)(conn)
        raise RuntimeError("the effect failed half-way")

    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await apply_once(conn, CONSUMER, event, half_done_then_fails)
        assert await effects(pool) == []
        assert await checkpoint(pool, "call-f") is None
        assert await apply_once(conn, CONSUMER, event, recording(event))
    assert await effects(pool) == [("call-f", 1)]


async def _waiting_on_a_lock(pool: asyncpg.Pool, pid: int) -> None:
    async def blocked() -> bool:
        return bool(
            await pool.fetchval(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = $1", pid
            )
        )

    await wait_for(blocked, "the second delivery to wait for the first")


async def test_a_concurrent_double_delivery_applies_once(pool: asyncpg.Pool) -> None:
    """The second delivery arrives while the first one's transaction is still open: it
    must wait for it and then apply nothing."""
    event = envelope("call-c", 1)
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(conn: Connection) -> None:
        await recording(event)(conn)
        inside.set()
        await release.wait()

    async with pool.acquire() as first, pool.acquire() as second:
        applying = asyncio.create_task(apply_once(first, CONSUMER, event, slow))
        await inside.wait()
        duplicate = asyncio.create_task(apply_once(second, CONSUMER, event, recording(event)))
        await _waiting_on_a_lock(pool, second.get_server_pid())
        release.set()
        assert await applying is True
        assert await duplicate is False
    assert await effects(pool) == [("call-c", 1)]


async def test_a_double_delivery_whose_first_attempt_fails_still_applies_once(
    pool: asyncpg.Pool,
) -> None:
    event = envelope("call-r", 1)
    inside, release = asyncio.Event(), asyncio.Event()

    async def fails_late(conn: Connection) -> None:
        await recording(event)(conn)
        inside.set()
        await release.wait()
        raise RuntimeError("rolled back")

    async with pool.acquire() as first, pool.acquire() as second:
        applying = asyncio.create_task(apply_once(first, CONSUMER, event, fails_late))
        await inside.wait()
        duplicate = asyncio.create_task(apply_once(second, CONSUMER, event, recording(event)))
        await _waiting_on_a_lock(pool, second.get_server_pid())
        release.set()
        with pytest.raises(RuntimeError):
            await applying
        assert await duplicate is True
    assert await effects(pool) == [("call-r", 1)]


async def test_many_simultaneous_deliveries_of_one_event_apply_once(pool: asyncpg.Pool) -> None:
    event = envelope("call-m", 1)

    async def deliver() -> bool:
        async with pool.acquire() as conn:
            return await apply_once(conn, CONSUMER, event, recording(event))

    outcomes = await asyncio.gather(*(deliver() for _ in range(10)))
    assert sorted(outcomes) == [False] * 9 + [True]
    assert await effects(pool) == [("call-m", 1)]


@pytest.fixture
async def topic(broker: EmbeddedBroker) -> str:
    """A topic of this test's own on the session broker."""
    name = f"test.consumer.{secrets.token_hex(4)}"
    await ensure_topics(broker.bootstrap, [name], partitions=3)
    return name


async def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(
                topic, value=value, key=key, partition=0, headers=[("origin", b"test")]
            )
    finally:
        await producer.stop()


async def test_malformed_messages_are_kept_aside_and_consumption_goes_on(
    broker: EmbeddedBroker, pool: asyncpg.Pool, topic: str
) -> None:
    good = [envelope("call-ok", v) for v in (1, 2)]
    bad_values = [b"not json at all", b'{"type": "call.offered"}', None, b"\xff\xfe"]
    await produce(
        broker.bootstrap,
        topic,
        [
            (b"call-ok", good[0].to_message()),
            (b"junk", bad_values[0]),
            (b"call-ok", good[0].to_message()),  # a duplicate between the junk
            (b"junk", bad_values[1]),
            (b"junk", bad_values[2]),
            (None, bad_values[3]),
            (b"call-ok", good[1].to_message()),
        ],
    )
    stop = asyncio.Event()
    group = f"projector-{topic}"  # a fresh group: Tansu is slow to rejoin a used one
    consumer = EventConsumer(
        pool, broker.bootstrap, consumer=group, topics=[topic], handler=record_effect
    )
    with capture_logs() as logs:
        running = asyncio.create_task(consumer.run(stop))
        try:
            await wait_for(
                lambda: _count(pool, "effects", 2), "the events after the junk to be applied"
            )
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    assert await effects(pool) == [("call-ok", 1), ("call-ok", 2)]
    rejects = await pool.fetch(
        "select consumer, topic, partition, message_offset, message_key, message_value, "
        "headers, error from consumer_rejects order by message_offset"
    )
    assert [r["message_offset"] for r in rejects] == [1, 3, 4, 5]
    assert [r["message_value"] for r in rejects] == bad_values
    assert [r["message_key"] for r in rejects] == [b"junk", b"junk", b"junk", None]
    assert {(r["consumer"], r["topic"], r["partition"]) for r in rejects} == {(group, topic, 0)}
    assert rejects[0]["headers"] == [["origin", "test"]]
    assert "not an event envelope" in rejects[1]["error"]
    assert "event_id" in rejects[1]["error"]  # it says what is missing
    assert "no value" in rejects[2]["error"]
    logged = [e for e in logs if e["event"] == "consumer.message_rejected"]
    assert [e["offset"] for e in logged] == [1, 3, 4, 5]
    assert all(e["log_level"] == "warning" and e["topic"] == topic for e in logged)


async def _count(pool: asyncpg.Pool, table: str, at_least: int) -> bool:
    return await pool.fetchval(f"select count(*) from {table}") >= at_least


async def test_a_failing_handler_is_retried_in_order_and_offsets_follow_effects(
    broker: EmbeddedBroker, pool: asyncpg.Pool, topic: str
) -> None:
    streams = [f"call-{n}" for n in range(3)]
    events = [envelope(s, v) for v in range(1, 6) for s in streams]
    await produce(broker.bootstrap, topic, [(e.stream.encode(), e.to_message()) for e in events])
    failures = {("call-1", 3): 2}  # this event's handler fails twice before it succeeds

    async def flaky(conn: Connection, event: Envelope) -> None:
        await record_effect(conn, event)
        remaining = failures.get((event.stream, event.stream_version), 0)
        if remaining:
            failures[(event.stream, event.stream_version)] = remaining - 1
            raise RuntimeError("downstream hiccup")

    stop = asyncio.Event()
    group = f"projector-{topic}"
    consumer = EventConsumer(pool, broker.bootstrap, consumer=group, topics=[topic], handler=flaky)
    with capture_logs() as logs:
        running = asyncio.create_task(consumer.run(stop))
        try:
            await wait_for(lambda: _count(pool, "effects", len(events)), "every event")
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    assert await effects(pool) == [(e.stream, e.stream_version) for e in events]
    assert [e["event"] for e in logs].count("consumer.handler_failed") == 2
    for stream in streams:
        assert await checkpoint(pool, stream, group) == 5

    # The committed offsets cover every applied event: a restart starts after them.
    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await reader.start()
    try:
        assert await reader.committed(TopicPartition(topic, 0)) == len(events)
    finally:
        await reader.stop()


# -- batches ----------------------------------------------------------------------------


async def record_all(conn: Connection, events: Sequence[Envelope]) -> None:
    for event in events:
        await record_effect(conn, event)


async def test_a_batch_applies_each_event_once_in_order(pool: asyncpg.Pool) -> None:
    a1, a2, b1, a3 = (envelope("call-a", 1), envelope("call-a", 2), envelope("call-b", 1),
                      envelope("call-a", 3))  # fmt: skip
    async with pool.acquire() as conn:
        applied = await apply_batch_once(conn, CONSUMER, [a1, a2, a1, b1, a3, a2], record_all)
        assert applied == [a1, a2, b1, a3]
        # The same batch again, and a later one overlapping it: nothing twice.
        assert await apply_batch_once(conn, CONSUMER, [a1, a2, b1, a3], record_all) == []
        b2 = envelope("call-b", 2)
        assert await apply_batch_once(conn, CONSUMER, [b1, b2, a3], record_all) == [b2]
        # One event at a time and batches share their checkpoints.
        assert not await apply_once(conn, CONSUMER, b2, lambda c: record_effect(c, b2))
    assert await effects(pool) == [
        ("call-a", 1), ("call-a", 2), ("call-b", 1), ("call-a", 3), ("call-b", 2)
    ]  # fmt: skip
    assert await checkpoint(pool, "call-a") == 3
    assert await checkpoint(pool, "call-b") == 2


async def test_store_marks_rise_with_the_effects_and_never_fall(pool: asyncpg.Pool) -> None:
    async def marks() -> dict[str, tuple[int, str]]:
        rows = await pool.fetch(
            "select store, position, chain_hash from consumer_store_marks where consumer = $1",
            CONSUMER,
        )
        return {r["store"]: (r["position"], r["chain_hash"]) for r in rows}

    a1, a2 = envelope("call-a", 1), envelope("call-a", 2)
    async with pool.acquire() as conn:
        batch = [StoreMark("gw", 5, "h5"), StoreMark("gw", 3, "h3"), StoreMark("acd", 7, "h7")]
        assert await apply_batch_once(conn, CONSUMER, [a1], record_all, batch) == [a1]
        assert await marks() == {"gw": (5, "h5"), "acd": (7, "h7")}
        # A redelivered, older event's mark does not lower the store's.
        applied = await apply_once(
            conn, CONSUMER, a2, lambda c: record_effect(c, a2), StoreMark("gw", 4, "h4")
        )
        assert applied
        assert await marks() == {"gw": (5, "h5"), "acd": (7, "h7")}

        async def fails(c: Connection, events: Sequence[Envelope]) -> None:
            raise RuntimeError("the effect failed")

        # A failed effect leaves the marks where they were (same transaction).
        with pytest.raises(RuntimeError):
            await apply_batch_once(
                conn, CONSUMER, [envelope("call-b", 1)], fails, [StoreMark("gw", 9, "h9")]
            )
        assert await marks() == {"gw": (5, "h5"), "acd": (7, "h7")}


async def test_a_batch_that_fails_records_nothing(pool: asyncpg.Pool) -> None:
    events = [envelope("call-f", 1), envelope("call-g", 1)]

    async def fails(conn: Connection, claimed: Sequence[Envelope]) -> None:
        await record_all(conn, claimed)
        raise RuntimeError("rolled back")

    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await apply_batch_once(conn, CONSUMER, events, fails)
        assert await checkpoint(pool, "call-f") is None
        assert await apply_batch_once(conn, CONSUMER, events, record_all) == events
    assert await effects(pool) == [("call-f", 1), ("call-g", 1)]


async def test_a_version_gap_in_a_batch_is_applied_and_logged(pool: asyncpg.Pool) -> None:
    with capture_logs() as logs:
        async with pool.acquire() as conn:
            await apply_batch_once(
                conn, CONSUMER, [envelope("call-v", 1), envelope("call-v", 4)], record_all
            )
    [gap] = [e for e in logs if e["event"] == "consumer.version_gap"]
    assert (gap["expected_version"], gap["applied_version"]) == (2, 4)
    assert await checkpoint(pool, "call-v") == 4


async def test_concurrent_overlapping_batches_apply_each_event_once(pool: asyncpg.Pool) -> None:
    """A second batch arrives while the first one's transaction is open (a rebalance): it
    waits for the first, then applies only what the first did not."""
    first_batch = [envelope("call-x", 1), envelope("call-y", 1)]
    y2 = envelope("call-y", 2)
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(conn: Connection, claimed: Sequence[Envelope]) -> None:
        await record_all(conn, claimed)
        inside.set()
        await release.wait()

    async with pool.acquire() as first, pool.acquire() as second:
        applying = asyncio.create_task(apply_batch_once(first, CONSUMER, first_batch, slow))
        await inside.wait()
        overlapping = asyncio.create_task(
            apply_batch_once(second, CONSUMER, [*first_batch, y2], record_all)
        )
        await _waiting_on_a_lock(pool, second.get_server_pid())
        release.set()
        assert await applying == first_batch
        assert await overlapping == [y2]
    assert await effects(pool) == [("call-x", 1), ("call-y", 1), ("call-y", 2)]


async def test_many_simultaneous_batches_apply_once(pool: asyncpg.Pool) -> None:
    events = [envelope(f"call-{n}", 1) for n in range(5)]

    async def deliver(batch: list[Envelope]) -> list[Envelope]:
        async with pool.acquire() as conn:
            return await apply_batch_once(conn, CONSUMER, batch, record_all)

    # Each delivery in its own order of streams: sorted locking keeps them deadlock-free.
    outcomes = await asyncio.gather(*(deliver(events[n:] + events[:n]) for n in range(10)))
    assert sorted(e.stream for applied in outcomes for e in applied) == sorted(
        e.stream for e in events
    )
    assert len(await effects(pool)) == len(events)


def test_a_consumer_has_one_kind_of_handler(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="either handler or batch_handler"):
        EventConsumer(pool, "localhost:9092", consumer=CONSUMER, topics=["t"])
    with pytest.raises(ValueError, match="either handler or batch_handler"):
        EventConsumer(
            pool,
            "localhost:9092",
            consumer=CONSUMER,
            topics=["t"],
            handler=record_effect,
            batch_handler=record_all,
        )


async def test_a_failing_batch_is_retried_in_order_and_offsets_follow_effects(
    broker: EmbeddedBroker, pool: asyncpg.Pool, topic: str
) -> None:
    streams = [f"call-{n}" for n in range(3)]
    events = [envelope(s, v) for v in range(1, 6) for s in streams]
    duplicates = events[:4]  # delivered twice: applied once
    await produce(
        broker.bootstrap,
        topic,
        [(e.stream.encode(), e.to_message()) for e in [*events[:6], *duplicates, *events[6:]]],
    )
    failures = {("call-1", 3): 2}  # a batch holding this event fails twice
    batches: list[int] = []
    committed: list[Envelope] = []

    async def flaky(conn: Connection, claimed: Sequence[Envelope]) -> None:
        await record_all(conn, claimed)
        for event in claimed:
            remaining = failures.get((event.stream, event.stream_version), 0)
            if remaining:
                failures[(event.stream, event.stream_version)] = remaining - 1
                raise RuntimeError("downstream hiccup")
        batches.append(len(claimed))

    async def after(claimed: Sequence[Envelope]) -> None:
        committed.extend(claimed)

    stop = asyncio.Event()
    group = f"batch-{topic}"
    consumer = EventConsumer(
        pool,
        broker.bootstrap,
        consumer=group,
        topics=[topic],
        batch_handler=flaky,
        after_batch_commit=after,
    )
    with capture_logs() as logs:
        running = asyncio.create_task(consumer.run(stop))
        try:
            await wait_for(lambda: _count(pool, "effects", len(events)), "every event")
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    assert await effects(pool) == [(e.stream, e.stream_version) for e in events]
    assert [e.event_id for e in committed] == [e.event_id for e in events]
    assert sum(batches) == len(events)
    assert [e["event"] for e in logs].count("consumer.handler_failed") == 2
    for stream in streams:
        assert await checkpoint(pool, stream, group) == 5

    reader = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await reader.start()
    try:
        assert await reader.committed(TopicPartition(topic, 0)) == len(events) + len(duplicates)
    finally:
        await reader.stop()
