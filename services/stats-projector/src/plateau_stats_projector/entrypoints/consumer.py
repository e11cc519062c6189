"""The projector's Kafka entrypoint: every topic, each event applied once to the read models."""

from __future__ import annotations

import asyncpg

from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_stats_projector.adapters.read_models import Projection

#: The projector's consumer group and the name of its checkpoints.
CONSUMER = "stats-projector"


def projection_consumer(
    pool: asyncpg.Pool, bootstrap: str, projection: Projection, *, consumer: str = CONSUMER
) -> EventConsumer:
    """A consumer of every topic that applies each poll's events to the read models in one
    transaction (``apply_batch_once`` with the projection's batch handler)."""
    return EventConsumer(
        pool,
        bootstrap,
        consumer=consumer,
        topics=list(Topic),
        batch_handler=projection.apply_batch,
    )
