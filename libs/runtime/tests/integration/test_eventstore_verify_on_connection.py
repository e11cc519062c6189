"""``EventStore.verify(conn)``: the chain as one connection sees it, inside its transaction
(a restore verifies what it loaded before committing)."""

from __future__ import annotations

import asyncpg
import pytest

from plateau_runtime.eventstore import EventStore
from plateau_runtime.testing import MigratedSchema, offered_call

pytestmark = pytest.mark.integration


async def test_verify_on_a_connection_sees_its_uncommitted_events(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    await store.append("call-1", [offered_call(1)])
    async with service_pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            stored = await store.append("call-2", [offered_call(2), offered_call(3)], conn=conn)
            inside = await store.verify(conn)
            outside = await store.verify()
        finally:
            await transaction.rollback()
    assert (inside.intact, inside.events_checked, inside.head_position) == (True, 3, 3)
    assert inside.head_hash == stored[-1].hash.hex()
    assert (outside.events_checked, outside.head_position) == (1, 1)
    assert [e.position async for e in store.iterate()] == [1]
