"""Two consumers (or two replicas) applying facts of the same call at the same time: the
second waits for the first to commit, then recomputes the call with both facts, so the
measures are those of the whole call, not the sum of two partial views."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events import calls, routing
from plateau_contracts.events.common import StreamedEvent
from plateau_stats_projector.adapters.read_models import Projection
from plateau_stats_projector.domain.calls import assemble, contribution
from plateau_stats_projector.domain.facts import facts_of
from plateau_stats_projector.domain.intervals import to_ms

pytestmark = pytest.mark.integration


def envelope(event: StreamedEvent, tenant: str, at: datetime) -> Envelope:
    return Envelope(
        event_id=new_event_id(),
        type=event.event_type,
        schema_version=event.schema_version,
        stream=event.stream_id(tenant),
        stream_version=1,
        tenant=tenant,
        occurred_at=at,
        recorded_at=at,
        data=event.model_dump(mode="json"),
    )


async def test_facts_of_one_call_applied_at_once_add_up_to_the_whole_call(
    service_pool: asyncpg.Pool,
) -> None:
    tag = secrets.token_hex(3)
    tenant, call_id, queue = f"acme-{tag}", f"c-{tag}", f"q-{tag}"
    start = datetime(2026, 5, 4, 9, 14, 50, tzinfo=UTC)
    queued = envelope(
        routing.CallQueued(queue_id=queue, call_id=call_id, direction="inbound", priority=0),
        tenant,
        start,
    )
    connected = envelope(
        calls.CallConnected(call_id=call_id, agent_id="a1", extension="1001", queue_id=queue),
        tenant,
        start + timedelta(seconds=30),
    )
    projection = Projection(notify=False)
    first = await service_pool.acquire()
    second = await service_pool.acquire()
    try:
        in_first = first.transaction()
        await in_first.start()
        await projection.apply(first, queued)

        async def apply_second() -> None:
            async with second.transaction():
                await projection.apply(second, connected)

        applying = asyncio.create_task(apply_second())
        pid = second.get_server_pid()
        # Until the second is blocked behind the first (or, were it not, done): a guard.
        for _ in range(600):
            waiting = await service_pool.fetchval(
                "select wait_event_type = 'Lock' from pg_stat_activity where pid = $1", pid
            )
            if waiting or applying.done():
                break
            await asyncio.sleep(0.05)
        await in_first.commit()
        await applying
    finally:
        await service_pool.release(first)
        await service_pool.release(second)

    whole = contribution(
        assemble(call_id, [f.call for f in map(facts_of, (queued, connected)) if f.call])
    )
    rows = await service_pool.fetch(
        "select dimension, dimension_id, interval_start, measure, value from interval_measures "
        "where tenant = $1",
        tenant,
    )
    stored = {
        (r["dimension"], r["dimension_id"], to_ms(r["interval_start"]), r["measure"]): r["value"]
        for r in rows
    }
    assert stored == {
        (k.dimension.value, k.dimension_id, k.interval_ms, k.measure): v
        for k, v in whole.items()
        if v
    }
    assert ("queue", queue) in {k[:2] for k in stored}
