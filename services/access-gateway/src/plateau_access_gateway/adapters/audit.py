"""The audit trail: access facts appended to the gateway's own hash-chained event store.

Every login, failure, lockout, report view, export and refusal is an event of
``plateau_contracts.events.access``; the store chains them, so a rewritten audit trail shows
when the chain is verified (``plateau verify``).
"""

from __future__ import annotations

from plateau_access_gateway.domain.principal import Principal
from plateau_contracts.events.access import AccessDenied, DeniedReason
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.eventstore import (
    ChainReport,
    EventStore,
    NewEvent,
    StoredEvent,
    StreamAppend,
)


class AuditTrail:
    """Records access facts, each in its own stream (``user-<user_id>`` or ``login-<name>``)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def record(self, tenant: str, *facts: StreamedEvent) -> list[StoredEvent]:
        """Append the facts (one transaction), unconditionally: an audit fact is never refused."""
        return await self._store.append_many(
            [StreamAppend(fact.stream_id(), [NewEvent(fact, tenant=tenant)]) for fact in facts]
        )

    async def denied(
        self,
        principal: Principal,
        *,
        method: str,
        path: str,
        kind: str | None,
        object_id: str | None,
        reason: DeniedReason,
    ) -> None:
        """Record a refused request of ``principal`` (who, with which credential, what)."""
        await self.record(
            principal.tenant,
            AccessDenied(
                user_id=principal.user_id,
                session_id=principal.credential_id,
                method=method,
                path=path,
                resource_kind=kind,
                resource_id=object_id,
                reason=reason,
            ),
        )

    async def page(
        self, after_position: int = 0, limit: int = 100, tenant: str | None = None
    ) -> list[StoredEvent]:
        """Audit events after a chain position, oldest first, of one tenant or all."""
        found: list[StoredEvent] = []
        position = after_position
        while len(found) < limit:
            batch = await self._store.read_all(position, max(limit, 500))
            if not batch:
                break
            for stored in batch:
                if tenant is None or stored.envelope.tenant == tenant:
                    found.append(stored)
                    if len(found) == limit:
                        break
            position = batch[-1].position
        return found

    async def verify(self) -> ChainReport:
        """The chain verifier's verdict on the whole audit trail."""
        return await self._store.verify()
