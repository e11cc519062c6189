"""Building blocks shared by the event modules: stream naming and common value types.

Holds no events itself; each resource module declares its own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from plateau_contracts.envelope import EventData

#: Separates the tenant from the id in a tenant-scoped stream id
#: (``queue-<tenant>:<queue_id>``). A tenant id never contains it (``TenantId``), so the id
#: splits at its first one whatever the rest holds.
TENANT_SEPARATOR = ":"

_TENANT_PATTERN = r"^[A-Za-z0-9._-]+$"


class StreamedEvent(EventData):
    """Base of catalogue events: says which stream (aggregate) a fact is appended to.

    The stream id is ``<stream_prefix>-<value of the stream_key field>``; it is also the
    Kafka message key, so everything in one stream stays in order on the bus. A
    ``tenant_scoped`` event names an aggregate whose id the tenant chooses (a queue, an
    agent, a dialled number): two tenants may use the same one, so its stream id carries
    the tenant too, ``<stream_prefix>-<tenant>:<key>``, and the event store's
    ``(stream, stream_version)`` and the consumers' checkpoints stay apart per tenant.
    """

    stream_prefix: ClassVar[str]
    stream_key: ClassVar[str]
    tenant_scoped: ClassVar[bool] = False

    def stream_id(self, tenant: str | None = None) -> str:
        """The stream this fact belongs to, e.g. ``call-3f2c`` or ``queue-mno:q-support``.

        ``tenant`` is the envelope's tenant: required for a ``tenant_scoped`` event,
        ignored otherwise (so generic code may always pass it).
        """
        return self._named(self.stream_prefix, str(getattr(self, self.stream_key)), tenant)

    def _named(self, prefix: str, key: str, tenant: str | None) -> str:
        if not self.tenant_scoped:
            return f"{prefix}-{key}"
        if tenant is None:
            raise ValueError(
                f"{type(self).__name__} belongs to a tenant's stream: pass the tenant to stream_id"
            )
        return tenant_stream(prefix, tenant, key)

    @classmethod
    def stream_pattern(cls) -> str:
        """The stream naming rule, for documentation, e.g. ``call-<call_id>``.

        An event whose stream depends on its content lists the alternatives joined by
        ``" or "``.
        """
        return cls._pattern(cls.stream_prefix, cls.stream_key)

    @classmethod
    def _pattern(cls, prefix: str, key: str) -> str:
        if cls.tenant_scoped:
            return f"{prefix}-<tenant>{TENANT_SEPARATOR}<{key}>"
        return f"{prefix}-<{key}>"


def tenant_stream(prefix: str, tenant: str, key: str) -> str:
    """The id of a tenant's stream: ``<prefix>-<tenant>:<key>``.

    Raises ``ValueError`` for a tenant id that could not be split back out (empty, or
    holding anything but letters, digits, ``.``, ``_`` and ``-``).
    """
    if not re.fullmatch(_TENANT_PATTERN, tenant):
        raise ValueError(f"tenant id {tenant!r} must be letters, digits, '.', '_' or '-'")
    return f"{prefix}-{tenant}{TENANT_SEPARATOR}{key}"


def split_tenant_stream(stream: str) -> tuple[str, str, str]:
    """``(prefix, tenant, key)`` of a tenant's stream id, e.g. ``queue-mno:q-1`` gives
    ``("queue", "mno", "q-1")``; ``ValueError`` if it is not one."""
    prefix, dash, rest = stream.partition("-")
    tenant, separator, key = rest.partition(TENANT_SEPARATOR)
    if not (dash and separator and prefix and key) or not re.fullmatch(_TENANT_PATTERN, tenant):
        raise ValueError(f"{stream!r} is not a tenant's stream id (<prefix>-<tenant>:<key>)")
    return prefix, tenant, key


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

#: A tenant (client account) id: it may appear in stream ids, so never holds
#: ``TENANT_SEPARATOR``.
TenantId = Annotated[str, Field(min_length=1, max_length=128, pattern=_TENANT_PATTERN)]

#: A duration in whole milliseconds.
Millis = Annotated[int, Field(ge=0)]
