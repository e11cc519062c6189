"""Helpers for Plateau's tests: migrated throw-away schemas and ready-made events.

Shared by the root ``conftest.py`` fixtures and the test modules of every package, so
tests import them from here rather than from a ``conftest`` module (whose name is not
unique across folders).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events.calls import CallOffered
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.db import connect
from plateau_runtime.eventstore import NewEvent
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn


@dataclass(frozen=True)
class MigratedSchema:
    """A freshly migrated service schema and the DSN of its least-privilege role."""

    service: ServiceSchema
    dsn: str

    @property
    def schema(self) -> str:
        return self.service.schema


async def make_schema(
    admin_dsn: str, migrations_dir: Path | None = None, prefix: str = "t"
) -> MigratedSchema:
    """Migrate a uniquely named schema, as a service's would be."""
    service = ServiceSchema(f"{prefix}_{secrets.token_hex(4)}", migrations_dir)
    password = secrets.token_urlsafe(16)
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, service, password)
    finally:
        await admin.close()
    return MigratedSchema(service, role_dsn(admin_dsn, service, password))


def offered_call(n: int, tenant: str = "acme") -> NewEvent:
    """A ``call.offered`` event to record in tests: the most common fact of the platform."""
    return NewEvent(
        CallOffered(
            call_id=f"c{n}",
            ani="+242066123456",
            dnis="+242053000100",
            trunk="mno",
            sip_call_id=f"sip-{n}",
        ),
        tenant=tenant,
    )


def as_stored(
    tenant: str,
    timed: Iterable[tuple[datetime, StreamedEvent]],
    versions: dict[str, int] | None = None,
) -> list[Envelope]:
    """Events as their producers would have stored and relayed them: each in its stream
    (the tenant's, for tenant-scoped events), each stream's versions going on from
    ``versions`` (updated in place, so several calls continue the same streams)."""
    versions = {} if versions is None else versions
    out = []
    for at, event in timed:
        stream = event.stream_id(tenant)
        versions[stream] = versions.get(stream, 0) + 1
        out.append(
            Envelope(
                event_id=new_event_id(),
                type=event.event_type,
                schema_version=event.schema_version,
                stream=stream,
                stream_version=versions[stream],
                tenant=tenant,
                occurred_at=at,
                recorded_at=at,
                data=event.model_dump(mode="json"),
            )
        )
    return out
