"""The stats projector's settings: ``PLATEAU_STATS_*`` (with the runtime's ``PLATEAU_*``)."""

from __future__ import annotations

from pydantic import Field

from plateau_runtime.settings import ServiceSettings


class ProjectorSettings(ServiceSettings):
    """How many consumers of the projector's group this process runs."""

    stats_consumers: int = Field(
        default=3,
        ge=1,
        le=12,
        description=(
            "Members of the projector's consumer group in this process. Each event costs a "
            "few round trips and a commit, so several members sharing the partitions keep "
            "the read models fresh under load (facts of one call are serialised by a lock)."
        ),
    )
