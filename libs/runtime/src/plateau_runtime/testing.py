"""Helpers for Plateau's tests: migrated throw-away schemas and ready-made events.

Shared by the root ``conftest.py`` fixtures and the test modules of every package, so
tests import them from here rather than from a ``conftest`` module (whose name is not
unique across folders).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from plateau_contracts.events.calls import CallOffered
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
