"""Kafka topic names: one per producing context (DESIGN §3). The message key is the stream id."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """Topics of the event bus, one per producing bounded context."""

    CALLS = "plateau.calls"
    ROUTING = "plateau.routing"
    AGENTS = "plateau.agents"
    DIALER = "plateau.dialer"
    ACCESS = "plateau.access"


#: Partitions per topic in the embedded default; production sets its own in deploy/k8s.
DEFAULT_PARTITIONS = 6


def partition_key(stream: str) -> bytes:
    """The Kafka key of an event: its stream id, so one stream stays in one partition."""
    return stream.encode()
