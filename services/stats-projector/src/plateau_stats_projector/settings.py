"""The stats projector's settings: ``PLATEAU_STATS_*`` (with the runtime's ``PLATEAU_*``)."""

from __future__ import annotations

from pydantic import Field

from plateau_runtime.settings import ServiceSettings


class ProjectorSettings(ServiceSettings):
    """How many consumers of the projector's group this process runs."""

    stats_consumers: int = Field(
        default=1,
        ge=1,
        le=12,
        description=(
            "Members of the projector's consumer group in this process. Each applies a "
            "poll of events in one transaction, and one keeps up with several thousand "
            "events/s; more share the partitions (facts of one call are serialised by a "
            "lock, shared rows are written in one order)."
        ),
    )
