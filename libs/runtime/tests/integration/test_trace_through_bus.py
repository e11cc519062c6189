"""A trace started where a fact is recorded continues in every consumer of that fact:
span → event store (``traceparent``) → relay → Kafka headers → consumer's handler span."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from plateau_contracts.envelope import Envelope
from plateau_contracts.events.calls import CallOffered
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.eventstore import EventStore, NewEvent
from plateau_runtime.outbox import OutboxRelay
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def recording_tracer() -> None:
    # A real SDK provider, so spans get real, propagatable ids (the default API one does not).
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


async def test_the_consumer_handles_an_event_inside_the_producers_trace(
    broker: EmbeddedBroker, service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    stream = f"call-trace-{secrets.token_hex(4)}"
    with trace.get_tracer("test").start_as_current_span("carrier INVITE") as span:
        producer_trace = span.get_span_context().trace_id
        await store.append(
            stream,
            [
                NewEvent(
                    CallOffered(
                        call_id=stream,
                        ani="+242066123456",
                        dnis="+242053000100",
                        trunk="mno",
                        sip_call_id="t@carrier",
                    ),
                    tenant="acme",
                )
            ],
        )
    stored = (await store.read_stream(stream))[0].envelope
    assert stored.traceparent is not None
    assert f"{producer_trace:032x}" in stored.traceparent

    seen: asyncio.Queue[int] = asyncio.Queue()

    async def handler(conn: Connection, envelope: Envelope) -> None:
        if envelope.stream == stream:
            await seen.put(trace.get_current_span().get_span_context().trace_id)

    stop = asyncio.Event()
    relay = OutboxRelay(store, service_pool, broker.bootstrap, idle_poll=0.01)
    consumer = EventConsumer(
        service_pool,
        broker.bootstrap,
        consumer=f"trace-{secrets.token_hex(4)}",
        topics=[Topic.CALLS],
        handler=handler,
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:
        handled_in = await asyncio.wait_for(seen.get(), 90)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert handled_in == producer_trace
