"""The event envelope every Plateau event travels in (DESIGN §3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from uuid6 import uuid7


class EventData(BaseModel):
    """Base of every event's typed payload.

    A subclass names its event with ``event_type`` (past tense, ``context.fact``) and its
    ``schema_version``; the catalogue maps the pair back to the class.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    topic: ClassVar[str]


def utc_now() -> datetime:
    """The current time in UTC; the default clock of envelopes."""
    return datetime.now(UTC)


def new_event_id() -> UUID:
    """A UUIDv7: time-ordered, so ids sort roughly by creation."""
    return UUID(str(uuid7()))


class Envelope(BaseModel):
    """One recorded fact about one stream, with everything needed to trace and verify it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(description="UUIDv7 of this event; unique across all stores.")
    type: str = Field(
        description="Past-tense event name, e.g. `call.offered`.", examples=["call.offered"]
    )
    schema_version: int = Field(ge=1, description="Version of the `data` schema for `type`.")
    stream: str = Field(
        min_length=1,
        description="Aggregate stream id, e.g. `call-<uuid>`; also the Kafka message key.",
    )
    stream_version: int = Field(ge=1, description="1-based position of this event in its stream.")
    tenant: str = Field(min_length=1, description="Tenant (client account) the fact belongs to.")
    occurred_at: datetime = Field(description="When the fact happened (UTC).")
    recorded_at: datetime = Field(description="When the event store recorded it (UTC).")
    correlation_id: UUID | None = Field(
        default=None, description="Id shared by every event of one business flow."
    )
    causation_id: UUID | None = Field(
        default=None, description="Id of the event or command that caused this one."
    )
    traceparent: str | None = Field(
        default=None, description="W3C trace context of the span that recorded it."
    )
    data: dict[str, Any] = Field(
        description="The typed payload; its schema is given by `type` and `schema_version`."
    )

    @field_validator("occurred_at", "recorded_at")
    @classmethod
    def _must_be_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    def canonical_json(self) -> bytes:
        """The bytes the tamper-evident hash chain is computed over.

        Keys sorted, no insignificant white space, envelope timestamps always as
        ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: the same event gives the same bytes whoever
        serialises it, independent of any library's datetime formatting. ``data`` is
        already JSON-native (it is stored and read back as JSON).
        """
        return canonical_json(self.model_dump(mode="python"))

    def to_message(self) -> bytes:
        """Wire form on the bus: the JSON envelope."""
        return self.model_dump_json().encode()

    @classmethod
    def from_message(cls, raw: bytes | str) -> Envelope:
        """Parse the wire form; raises ``pydantic.ValidationError`` on anything malformed."""
        return cls.model_validate_json(raw)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, compact separators, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
