"""Building blocks shared by the event modules: stream naming and common value types.

Holds no events itself; each resource module declares its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from plateau_contracts.envelope import EventData


class StreamedEvent(EventData):
    """Base of catalogue events: says which stream (aggregate) a fact is appended to.

    The stream id is ``<stream_prefix>-<value of the stream_key field>``; it is also the
    Kafka message key, so everything in one stream stays in order on the bus.
    """

    stream_prefix: ClassVar[str]
    stream_key: ClassVar[str]

    def stream_id(self) -> str:
        """The stream this fact belongs to, e.g. ``call-3f2c``."""
        return f"{self.stream_prefix}-{getattr(self, self.stream_key)}"

    @classmethod
    def stream_pattern(cls) -> str:
        """The stream naming rule, for documentation, e.g. ``call-<call_id>``.

        An event whose stream depends on its content lists the alternatives joined by
        ``" or "``.
        """
        return f"{cls.stream_prefix}-<{cls.stream_key}>"


def _require_utc(value: datetime) -> datetime:
    # Naive times are ambiguous across the tenant's zone and the host's; refuse them
    # here exactly as the envelope does for its own timestamps.
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(UTC)


#: A timezone-aware instant, normalised to UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]

#: An E.164 telephone number: ``+``, country code, subscriber number, at most 15 digits.
E164 = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$", examples=["+242066123456"])]

#: A lowercase hexadecimal SHA-256 digest.
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

#: A final SIP response code (RFC 3261 §21), as sent or received.
SipCode = Annotated[int, Field(ge=300, le=699)]

#: An identifier chosen by Plateau or the tenant (queue, agent, campaign, ...).
Ident = Annotated[str, Field(min_length=1, max_length=128)]

#: A duration in whole milliseconds.
Millis = Annotated[int, Field(ge=0)]
