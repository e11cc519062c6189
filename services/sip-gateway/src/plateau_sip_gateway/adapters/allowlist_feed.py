"""Feeds the in-memory allow-list from the dialer's facts on ``plateau.dialer``."""

from __future__ import annotations

import uuid

import asyncpg

from plateau_contracts.envelope import Envelope
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection
from plateau_sip_gateway.domain.allowlist import AllowList


def allowlist_consumer(
    pool: asyncpg.Pool, bootstrap: str, allowlist: AllowList, *, boot_id: str | None = None
) -> EventConsumer:
    """A consumer that applies every dialer fact to ``allowlist``.

    The allow-list lives in memory, so each process start must read the topic from the
    beginning: the consumer group is named per start (``boot_id``). ``AllowList.apply``
    ignores a stream version it has already applied, so redeliveries change nothing.
    """

    async def apply(_: Connection, envelope: Envelope) -> None:
        allowlist.apply(envelope)

    return EventConsumer(
        pool,
        bootstrap,
        consumer=f"sip-gateway-allowlist-{boot_id or uuid.uuid4().hex[:12]}",
        topics=[Topic.DIALER],
        handler=apply,
    )
