"""Writes the read models in PostgreSQL: one event's effects, inside the caller's transaction.

``Projection.apply`` is the consumer's handler: ``apply_once`` runs it in the transaction
that also records the event as applied, so an effect and its checkpoint commit together.
The projection is idempotent on its own too (a call fact already kept, or an agent fact
not newer than the agent's status, changes nothing), which lets a rebuild replay stores
without checkpoints of its own.

Each change also sends a PostgreSQL notification on ``CHANNEL`` (delivered at commit):
the access gateway listens and pushes the affected view to browsers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from plateau_contracts.envelope import Envelope
from plateau_runtime.db import Connection
from plateau_stats_projector.domain.agents import AgentStatus, advance, span_contribution
from plateau_stats_projector.domain.calls import assemble, contribution
from plateau_stats_projector.domain.contributions import Key, delta
from plateau_stats_projector.domain.facts import (
    AgentFact,
    AgentState,
    CallFact,
    CampaignFact,
    QueueSetting,
    facts_of,
)
from plateau_stats_projector.domain.intervals import (
    DEFAULT_TIME_ZONE,
    Grain,
    from_ms,
    period_start,
    to_ms,
)
from plateau_stats_projector.domain.metrics import Dimension

log = structlog.get_logger(__name__)

#: The PostgreSQL notification channel of read-model changes.
CHANNEL = "plateau_read_models"

#: Arguments of ``add_measures``-shaped parameters: the interval deltas, then the roll-up deltas.
MeasureArrays = tuple[
    list[str],
    list[str],
    list[datetime],
    list[str],
    list[int],
    list[str],
    list[str],
    list[str],
    list[datetime],
    list[str],
    list[int],
]

# The server-side steps are in migrations/0003_projection_functions.sql: one round trip
# each, so that an event costs a claim, a read and a write.
_KEEP_CALL_FACT = "select kept, facts, contribution from keep_call_fact($1, $2, $3, $4, $5)"
_PROJECT_CALL = "select project_call(" + ", ".join(f"${n}" for n in range(1, 34)) + ")"
_PROJECT_AGENT = "select project_agent(" + ", ".join(f"${n}" for n in range(1, 30)) + ")"
_PROJECT_CAMPAIGN = "select project_campaign(" + ", ".join(f"${n}" for n in range(1, 12)) + ")"


class TenantZones:
    """Each tenant's reporting time zone, read once from ``tenant_settings`` and cached."""

    def __init__(self, default: str = DEFAULT_TIME_ZONE) -> None:
        self._default = ZoneInfo(default)
        self._zones: dict[str, ZoneInfo] = {}

    async def zone(self, conn: Connection, tenant: str) -> ZoneInfo:
        cached = self._zones.get(tenant)
        if cached is not None:
            return cached
        name = await conn.fetchval(
            "select time_zone from tenant_settings where tenant = $1", tenant
        )
        zone = self._default
        if name is not None:
            try:
                zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                log.error("projection.unknown_time_zone", tenant=tenant, time_zone=name)
        self._zones[tenant] = zone
        return zone


class Projection:
    """Applies events to the read models (see the module docstring)."""

    def __init__(self, zones: TenantZones | None = None, *, notify: bool = True) -> None:
        self._zones = zones or TenantZones()
        self._notify = notify

    async def apply(self, conn: Connection, envelope: Envelope) -> None:
        """The effect of one event on the read models, on ``conn`` (in its transaction)."""
        facts = facts_of(envelope)
        tenant = envelope.tenant
        if facts.call is not None:
            await self._apply_call(conn, tenant, facts.call)
        if facts.agent is not None:
            await self._apply_agent(conn, tenant, facts.agent)
        if facts.queue is not None:
            await self._apply_queue(conn, tenant, facts.queue)
        if facts.campaign is not None:
            await self._apply_campaign(conn, tenant, facts.campaign)

    # -- calls

    async def _apply_call(self, conn: Connection, tenant: str, fact: CallFact) -> None:
        kept = await conn.fetchrow(
            _KEEP_CALL_FACT,
            tenant,
            fact.call_id,
            fact.stream,
            fact.stream_version,
            fact.to_json(),
        )
        if kept is None or not kept["kept"]:
            return
        detail = assemble(fact.call_id, [CallFact.from_json(f) for f in kept["facts"]])
        new = contribution(detail)
        old = {
            Key(Dimension(d), owner, interval, measure): value
            for d, owner, interval, measure, value in kept["contribution"]
        }
        change = delta(old, new)
        measures = await self._measure_arrays(conn, tenant, change)
        waiting = detail.open_visit
        answered = detail.segments[0].connected_ms if detail.segments else None
        queues = list(dict.fromkeys(v.queue_id for v in detail.visits))
        agents = list(dict.fromkeys(s.agent_id for s in detail.segments))
        touched = sorted(set(queues) | {s.queue_id for s in detail.segments if s.queue_id})
        await conn.execute(
            _PROJECT_CALL,
            tenant,
            fact.call_id,
            *measures,
            detail.direction,
            _at(detail.started_ms),
            _at(answered),
            _at(detail.ended_ms),
            detail.outcome,
            detail.end_cause,
            detail.ani,
            detail.dnis,
            detail.campaign_id,
            queues,
            agents,
            detail.wait_ms(),
            detail.talk_ms(),
            detail.hold_ms(),
            detail.wrap_ms(),
            detail.transfers,
            waiting.queue_id if waiting else None,
            _at(waiting.entered_ms) if waiting else None,
            *self._notification(
                tenant,
                call=fact.call_id,
                queues=touched,
                agents=sorted(set(agents)),
                campaign=detail.campaign_id,
            ),
        )

    # -- agents

    async def _apply_agent(self, conn: Connection, tenant: str, fact: AgentFact) -> None:
        row = await conn.fetchrow(
            "select * from agent_status where tenant = $1 and agent_id = $2",
            tenant,
            fact.agent_id,
        )
        status = None
        if row is not None:
            if fact.stream_version <= row["version"]:
                return
            status = AgentStatus(
                row["agent_id"],
                AgentState(row["state"]),
                to_ms(row["since"]),
                row["version"],
                row["pause_code"],
                row["call_id"],
                row["queue_id"],
                row["extension"],
                tuple(row["skills"]),
            )
        new, span = advance(status, fact)
        change = span_contribution(span) if span is not None else {}
        await conn.execute(
            _PROJECT_AGENT,
            tenant,
            new.agent_id,
            span.opened_by if span else None,
            span.state.value if span else None,
            span.pause_code if span else None,
            span.call_id if span else None,
            _at(span.start_ms if span else None),
            _at(span.end_ms if span else None),
            *await self._measure_arrays(conn, tenant, change),
            new.state.value,
            from_ms(new.since_ms),
            new.pause_code,
            new.call_id,
            new.queue_id,
            new.extension,
            list(new.skills),
            new.version,
            *self._notification(tenant, agents=[fact.agent_id]),
        )

    # -- queues

    async def _apply_queue(self, conn: Connection, tenant: str, setting: QueueSetting) -> None:
        await conn.execute(
            "insert into queue_settings as q (tenant, queue_id, name, service_level_threshold_s, "
            "service_level_target, required_skills) values ($1, $2, $3, $4, $5, $6) "
            "on conflict (tenant, queue_id) do update set name = excluded.name, "
            "service_level_threshold_s = excluded.service_level_threshold_s, "
            "service_level_target = excluded.service_level_target, "
            "required_skills = excluded.required_skills",
            tenant,
            setting.queue_id,
            setting.name,
            setting.service_level_threshold_s,
            setting.service_level_target,
            list(setting.required_skills),
        )
        channel, payload = self._notification(tenant, queues=[setting.queue_id])
        if channel is not None:
            await conn.execute("select pg_notify($1, $2)", channel, payload)

    # -- campaigns

    async def _apply_campaign(self, conn: Connection, tenant: str, fact: CampaignFact) -> None:
        await conn.execute(
            _PROJECT_CAMPAIGN,
            tenant,
            fact.campaign_id,
            from_ms(fact.at_ms),
            fact.status,
            fact.name,
            fact.list_version,
            fact.contacts,
            fact.contact_id,
            fact.dial_level,
            *self._notification(tenant, campaign=fact.campaign_id),
        )

    # -- measures

    async def _measure_arrays(
        self, conn: Connection, tenant: str, change: Mapping[Key, int]
    ) -> MeasureArrays:
        """``change`` and its roll-ups in the tenant's zone, as ``add_measures`` takes them."""
        keys = sorted(k for k, v in change.items() if v)
        rollups: dict[tuple[str, str, str, datetime, str], int] = defaultdict(int)
        if keys:
            zone = await self._zones.zone(conn, tenant)
            for key in keys:
                for grain in Grain:
                    period = period_start(key.interval_ms, grain, zone)
                    rollup = (
                        grain.value,
                        key.dimension.value,
                        key.dimension_id,
                        period,
                        key.measure,
                    )
                    rollups[rollup] += change[key]
        periods = sorted(k for k, v in rollups.items() if v)
        return (
            [k.dimension.value for k in keys],
            [k.dimension_id for k in keys],
            [from_ms(k.interval_ms) for k in keys],
            [k.measure for k in keys],
            [change[k] for k in keys],
            [p[0] for p in periods],
            [p[1] for p in periods],
            [p[2] for p in periods],
            [p[3] for p in periods],
            [p[4] for p in periods],
            [rollups[p] for p in periods],
        )

    def _notification(
        self,
        tenant: str,
        *,
        call: str | None = None,
        queues: list[str] | None = None,
        agents: list[str] | None = None,
        campaign: str | None = None,
    ) -> tuple[str | None, str | None]:
        """The channel and payload announcing a change (None, None when not notifying)."""
        if not self._notify:
            return None, None
        payload: dict[str, object] = {
            "tenant": tenant,
            "queues": queues or [],
            "agents": agents or [],
        }
        if call is not None:
            payload["call"] = call
        if campaign is not None:
            payload["campaign"] = campaign
        return CHANNEL, json.dumps(payload)


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)
