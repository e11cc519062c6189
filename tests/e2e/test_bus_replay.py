"""The embedded broker keeps nothing across restarts; the event stores do. After a second
``plateau up`` every stored event is on the bus again, because the relays start over."""

from __future__ import annotations

import asyncio
import shutil
import time
from uuid import UUID

import pytest
from aiokafka import AIOKafkaConsumer
from plateau_e2e import PlateauUp, admin_dsn, bootstrap, cli_env, make_home

from plateau_contracts.envelope import Envelope
from plateau_contracts.events.calls import CallOffered
from plateau_contracts.topics import Topic
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent

pytestmark = pytest.mark.e2e


async def _record_offered_call(admin_dsn: str) -> UUID:
    pool = await create_pool(admin_dsn, max_size=2)
    try:
        event = NewEvent(
            CallOffered(
                call_id="replay-1",
                ani="+242066123456",
                dnis="+242053000100",
                trunk="mno",
                sip_call_id="replay-1@carrier",
            ),
            tenant="demo",
        )
        await EventStore(pool, "sip_gateway").append("call-replay-1", [event])
        return event.event_id
    finally:
        await pool.close()


async def _appears_on_the_bus(bootstrap: str, event_id: UUID, timeout: float = 60) -> bool:
    consumer = AIOKafkaConsumer(
        Topic.CALLS, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    if Envelope.from_message(record.value).event_id == event_id:
                        return True
        return False
    finally:
        await consumer.stop()


def test_a_restarted_platform_republishes_the_stored_events() -> None:
    home = make_home()
    try:
        first = PlateauUp(cli_env(home))
        try:
            assert first.wait_for("Plateau is up"), first.output()[-4000:]
            event_id = asyncio.run(_record_offered_call(admin_dsn(home)))
            assert asyncio.run(_appears_on_the_bus(bootstrap(home), event_id))
        finally:
            assert first.stop() == 0

        second = PlateauUp(cli_env(home))
        try:
            assert second.wait_for("Plateau is up"), second.output()[-4000:]
            assert "relays republish every stored event" in second.output()
            assert asyncio.run(_appears_on_the_bus(bootstrap(home), event_id))
        finally:
            assert second.stop() == 0
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
