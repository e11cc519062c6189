"""The event bus (Kafka protocol): topic creation and connection checks.

Publishing goes through the outbox relay and consuming through the idempotent consumer;
this module holds what both and ``plateau up`` share.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from plateau_contracts.topics import DEFAULT_PARTITIONS, Topic
from plateau_runtime.errors import DependencyUnavailableError


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str] = tuple(Topic),
    partitions: int = DEFAULT_PARTITIONS,
    timeout: float = 15.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (KafkaConnectionError, TimeoutError, OSError) as exc:
        await admin.close()
        raise DependencyUnavailableError(
            f"the Kafka broker at {bootstrap} cannot be reached ({exc.__class__.__name__})",
            "start it (plateau up) or fix PLATEAU_KAFKA_BOOTSTRAP",
        ) from None
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t not in existing]
        if wanted:
            # Another process may create one in between: that is the goal anyway.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in wanted]
                )
        return wanted
    finally:
        await admin.close()
