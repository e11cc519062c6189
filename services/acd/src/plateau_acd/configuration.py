"""Applying a configuration file to the acd's event store, as events, versioned.

For each tenant of the file the configuration recorded so far is read back from the store,
and only what differs is recorded: ``queue.configured`` for a new or changed queue,
``entry_point.mapped``/``unmapped``, ``agent.configured``/``removed``, then
``tenant.configured`` with the next ``config_version``. Applying the same file twice
records nothing the second time. Everything of one application commits in one transaction,
taken under the store's append lock, so two applications never interleave and the running
acd reads each one whole.

Queues are never removed (calls may still wait in them): a queue missing from the file is
reported and left as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from plateau_acd.domain.config import PlateauConfig, TenantSpec
from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import EventData, canonical_json
from plateau_contracts.events.agents import AgentConfigured, AgentRemoved
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.routing import (
    EntryPointMapped,
    EntryPointUnmapped,
    QueueConfigured,
    TenantConfigured,
)
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend

_CONFIG_TYPES = {
    cls.event_type
    for cls in (
        QueueConfigured,
        EntryPointMapped,
        EntryPointUnmapped,
        AgentConfigured,
        AgentRemoved,
        TenantConfigured,
    )
}


@dataclass
class Recorded:
    """A tenant's configuration as its recorded facts leave it."""

    queues: dict[str, QueueConfigured] = field(default_factory=dict)
    entry_points: dict[str, EntryPointMapped] = field(default_factory=dict)
    agents: dict[str, AgentConfigured] = field(default_factory=dict)
    tenant: TenantConfigured | None = None

    def apply(self, data: EventData) -> None:
        match data:
            case QueueConfigured():
                self.queues[data.queue_id] = data
            case EntryPointMapped():
                self.entry_points[data.dnis] = data
            case EntryPointUnmapped():
                self.entry_points.pop(data.dnis, None)
            case AgentConfigured():
                self.agents[data.agent_id] = data
            case AgentRemoved():
                self.agents.pop(data.agent_id, None)
            case TenantConfigured():
                self.tenant = data


@dataclass(frozen=True)
class TenantOutcome:
    """What an application did to one tenant."""

    tenant: str
    version: int
    changes: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        if not self.changes:
            text = f"tenant {self.tenant}: up to date (configuration version {self.version})"
        else:
            text = (
                f"tenant {self.tenant}: configuration version {self.version} applied — "
                + ", ".join(self.changes)
            )
        return "\n".join([text, *(f"  warning: {w}" for w in self.warnings)])


def tenant_digest(spec: TenantSpec) -> str:
    """The digest of a tenant's section, recorded with each version."""
    return hashlib.sha256(canonical_json(spec.model_dump(mode="json"))).hexdigest()


def desired_events(spec: TenantSpec, recorded: Recorded) -> tuple[list[EventData], list[str]]:
    """The facts that bring ``recorded`` to ``spec`` (without ``tenant.configured``), and
    warnings about what cannot be done."""
    events: list[EventData] = []
    for queue in spec.queues:
        wanted = queue.to_queue_config().to_event()
        if recorded.queues.get(queue.id) != wanted:
            events.append(wanted)
    for entry in spec.entry_points:
        mapped = EntryPointMapped(dnis=entry.dnis, queue_id=entry.queue, name=entry.name)
        if recorded.entry_points.get(entry.dnis) != mapped:
            events.append(mapped)
    wanted_dnis = {e.dnis for e in spec.entry_points}
    events += [
        EntryPointUnmapped(dnis=d) for d in sorted(recorded.entry_points) if d not in wanted_dnis
    ]
    for agent in spec.agents:
        configured = AgentConfigured(
            agent_id=agent.id, name=agent.name, extension=agent.extension, skills=agent.skills
        )
        if recorded.agents.get(agent.id) != configured:
            events.append(configured)
    wanted_agents = {a.id for a in spec.agents}
    events += [AgentRemoved(agent_id=a) for a in sorted(recorded.agents) if a not in wanted_agents]
    wanted_queues = {q.id for q in spec.queues}
    warnings = [
        f"queue {q} is no longer in the file; queues are not removed, it keeps its configuration"
        for q in sorted(recorded.queues)
        if q not in wanted_queues
    ]
    return events, warnings


def _summary(events: list[EventData]) -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event.event_type] = counts.get(event.event_type, 0) + 1
    return tuple(f"{n} {kind}" for kind, n in sorted(counts.items()))


async def apply_config(
    store: EventStore, pool: asyncpg.Pool, config: PlateauConfig, source: str | None = None
) -> list[TenantOutcome]:
    """Record what differs between ``config`` and the recorded configuration; one outcome per
    tenant of the file."""
    outcomes: list[TenantOutcome] = []
    async with pool.acquire() as conn, conn.transaction():
        await store.lock_appends(conn)
        recorded: dict[str, Recorded] = {}
        position = 0
        while True:
            batch = await store.read_all(position, 5000, conn=conn)
            for stored in batch:
                position = stored.position
                if stored.envelope.type not in _CONFIG_TYPES:
                    continue
                try:
                    data = parse(stored.envelope)
                except UnknownEventError:
                    continue
                recorded.setdefault(stored.envelope.tenant, Recorded()).apply(data)
            if len(batch) < 5000:
                break
        appends: list[StreamAppend] = []
        for spec in config.tenants:
            current = recorded.get(spec.id, Recorded())
            events, warnings = desired_events(spec, current)
            digest = tenant_digest(spec)
            version = current.tenant.config_version if current.tenant else 0
            if events or current.tenant is None or current.tenant.config_sha256 != digest:
                version += 1
                events.append(
                    TenantConfigured(
                        tenant_id=spec.id,
                        name=spec.name,
                        time_zone=spec.time_zone,
                        pause_codes=spec.pause_codes,
                        config_version=version,
                        config_sha256=digest,
                        source=source,
                    )
                )
                changes = _summary(events)
            else:
                changes = ()
            for event in events:
                assert isinstance(event, StreamedEvent)
                appends.append(
                    StreamAppend(event.stream_id(spec.id), [NewEvent(event, tenant=spec.id)])
                )
            outcomes.append(TenantOutcome(spec.id, version, changes, tuple(warnings)))
        await store.append_many(appends, conn=conn)
    return outcomes


async def tenant_configured(store: EventStore, tenant: str) -> bool:
    """Whether a configuration was ever applied to ``tenant``."""
    return await store.stream_version(f"tenant-{tenant}") > 0
