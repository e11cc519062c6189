"""Feeds the allow-list from the dialer's facts on ``plateau.dialer``, and keeps them.

Each fact the allow-list takes is stored in the gateway's ``allowlist_facts`` table in the
consumer's exactly-once transaction, then applied in memory. At start the table is read
back (``load_allowlist``) before SIP listens, so the consumer keeps one group and its
checkpoints across restarts, and a restart does not depend on the broker's retention.
"""

from __future__ import annotations

import json

import asyncpg

from plateau_contracts.envelope import Envelope
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection
from plateau_sip_gateway.domain.allowlist import AllowList, is_allow_list_type

CONSUMER = "sip-gateway-allowlist"

_KEEP = """
insert into allowlist_facts (stream, stream_version, tenant, envelope)
values ($1, $2, $3, $4::jsonb)
on conflict do nothing
"""


def allowlist_consumer(
    pool: asyncpg.Pool, bootstrap: str, allowlist: AllowList, consumer: str = CONSUMER
) -> EventConsumer:
    """A consumer (group ``consumer``) that keeps every allow-list fact and applies it to
    ``allowlist``."""

    async def apply(conn: Connection, envelope: Envelope) -> None:
        if not is_allow_list_type(envelope.type):
            return
        await conn.execute(
            _KEEP,
            envelope.stream,
            envelope.stream_version,
            envelope.tenant,
            json.loads(envelope.to_message()),
        )
        allowlist.apply(envelope)

    return EventConsumer(pool, bootstrap, consumer=consumer, topics=[Topic.DIALER], handler=apply)


async def load_allowlist(pool: asyncpg.Pool, allowlist: AllowList) -> int:
    """Apply every kept fact to ``allowlist`` (each stream in order); how many there were."""
    count = 0
    async with pool.acquire() as conn, conn.transaction():
        cursor = conn.cursor(
            "select envelope::text from allowlist_facts order by tenant, stream, stream_version"
        )
        async for row in cursor:
            allowlist.apply(Envelope.from_message(row[0].encode()))
            count += 1
    return count
