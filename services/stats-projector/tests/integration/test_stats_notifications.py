"""Each read-model change is announced on a PostgreSQL channel when it commits, with the
tenant and what it touched, so the access gateway can push the view to browsers."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime

import asyncpg
import pytest

from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events.routing import CallQueued
from plateau_runtime.testing import MigratedSchema
from plateau_stats_projector.adapters.read_models import CHANNEL, Projection

pytestmark = pytest.mark.integration


async def test_a_change_is_notified_at_commit_and_not_before(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    tag = secrets.token_hex(3)
    event = CallQueued(queue_id=f"q-{tag}", call_id=f"c-{tag}", direction="inbound", priority=0)
    now = datetime.now(UTC)
    tenant = f"acme-{tag}"
    envelope = Envelope(
        event_id=new_event_id(),
        type=event.event_type,
        schema_version=event.schema_version,
        stream=event.stream_id(tenant),
        stream_version=1,
        tenant=tenant,
        occurred_at=now,
        recorded_at=now,
        data=event.model_dump(mode="json"),
    )
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(service_schema.dsn)
    await listener.add_listener(CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        async with service_pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await Projection().apply(conn, envelope)
            # A round trip on the listener's connection delivers whatever was notified.
            await listener.execute("select 1")
            assert received.empty()
            await transaction.commit()
        payload = json.loads(await asyncio.wait_for(received.get(), 30))
    finally:
        await listener.close()
    assert payload == {
        "tenant": f"acme-{tag}",
        "queues": [f"q-{tag}"],
        "agents": [],
        "call": f"c-{tag}",
    }
