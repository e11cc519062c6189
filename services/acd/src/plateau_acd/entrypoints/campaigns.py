"""The dialer's campaign facts (topic ``plateau.dialer``): which queue takes a campaign's
live answers (``Outbound.apply_dialer_fact``, in the consumer's transaction)."""

from __future__ import annotations

import asyncpg

from plateau_acd.outbound import Outbound
from plateau_contracts.envelope import Envelope
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection

CONSUMER = "acd-dialer"


def campaigns_consumer(
    outbound: Outbound,
    pool: asyncpg.Pool,
    bootstrap: str,
    *,
    tenants: frozenset[str] | None = None,
    consumer: str = CONSUMER,
) -> EventConsumer:
    """The consumer of ``plateau.dialer`` (Kafka group ``acd-dialer``); with ``tenants``,
    facts of other tenants are passed over."""

    async def handler(conn: Connection, envelope: Envelope) -> None:
        if tenants is None or envelope.tenant in tenants:
            await outbound.apply_dialer_fact(conn, envelope)

    return EventConsumer(pool, bootstrap, consumer=consumer, topics=[Topic.DIALER], handler=handler)
