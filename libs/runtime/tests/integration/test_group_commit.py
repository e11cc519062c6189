"""Group commit against real PostgreSQL: concurrent appends share transactions, yet each
caller keeps its own result, its own conflict and its own trace."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from plateau_runtime.errors import ConcurrencyError
from plateau_runtime.eventstore import NO_STREAM, EventStore, GroupCommitter
from plateau_runtime.testing import MigratedSchema, offered_call

pytestmark = pytest.mark.integration


class CountingClock:
    """Each transaction reads the clock exactly once: counting reads counts transactions."""

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return datetime(2026, 11, 27, tzinfo=UTC) + timedelta(milliseconds=next(self._ticks))


offered = offered_call


async def test_concurrent_appends_share_transactions_and_each_gets_its_own_events(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    clock = CountingClock()
    store = EventStore(service_pool, service_schema.schema, clock=clock)
    committer = GroupCommitter(store)
    results = await asyncio.gather(
        *(committer.append(f"call-{n}", [offered(n), offered(n)], NO_STREAM) for n in range(300))
    )
    assert [len(r) for r in results] == [2] * 300
    for n, stored in enumerate(results):
        assert {s.envelope.stream for s in stored} == {f"call-{n}"}
        assert [s.envelope.stream_version for s in stored] == [1, 2]
    assert (await store.head())[0] == 600
    assert clock.reads < 300 / 5, f"{clock.reads} transactions for 300 concurrent appends"
    assert (await store.verify()).intact


async def test_a_conflict_fails_only_its_own_caller(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    committer = GroupCommitter(store)
    await store.append("agent-1", [offered(0)])
    outcomes = await asyncio.gather(
        committer.append("agent-1", [offered(1)], expected_version=7),  # stale
        committer.append("agent-1", [offered(2)], expected_version=1),
        committer.append("agent-2", [offered(3)], expected_version=NO_STREAM),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], ConcurrencyError) and outcomes[0].actual == 1
    assert not isinstance(outcomes[1], BaseException)
    assert not isinstance(outcomes[2], BaseException)
    assert await store.stream_version("agent-1") == 2
    assert await store.stream_version("agent-2") == 1


async def test_each_caller_keeps_its_own_trace(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    store = EventStore(service_pool, service_schema.schema)
    committer = GroupCommitter(store)
    tracer = trace.get_tracer("test")

    async def traced(n: int) -> tuple[int, str | None]:
        with tracer.start_as_current_span(f"call {n}") as span:
            stored = await committer.append(f"call-t{n}", [offered(n)])
            return span.get_span_context().trace_id, stored[0].envelope.traceparent

    for trace_id, traceparent in await asyncio.gather(*(traced(n) for n in range(20))):
        assert traceparent is not None and f"{trace_id:032x}" in traceparent


async def test_a_database_failure_reaches_every_waiting_caller(
    service_schema: MigratedSchema,
) -> None:
    pool = await asyncpg.create_pool(service_schema.dsn, min_size=1, max_size=2)
    store = EventStore(pool, service_schema.schema)
    committer = GroupCommitter(store)
    await pool.close()
    outcomes = await asyncio.gather(
        *(committer.append(f"call-x{n}", [offered(n)]) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, asyncpg.InterfaceError) for o in outcomes), outcomes
