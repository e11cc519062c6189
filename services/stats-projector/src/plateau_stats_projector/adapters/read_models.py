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
from plateau_stats_projector.domain.calls import CallDetail, assemble, contribution
from plateau_stats_projector.domain.contributions import Key, delta
from plateau_stats_projector.domain.facts import (
    AgentFact,
    AgentState,
    CallFact,
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

_UPSERT_INTERVALS = """
insert into interval_measures as m (tenant, dimension, dimension_id, interval_start, measure, value)
select $1, * from unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bigint[])
on conflict (tenant, dimension, dimension_id, interval_start, measure)
do update set value = m.value + excluded.value
returning dimension, dimension_id, interval_start, measure, value
"""

_DROP_EMPTY_INTERVALS = """
delete from interval_measures m using unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[])
    as z(dimension, dimension_id, interval_start, measure)
where m.tenant = $1 and m.dimension = z.dimension and m.dimension_id = z.dimension_id
  and m.interval_start = z.interval_start and m.measure = z.measure and m.value = 0
"""

_UPSERT_ROLLUPS = """
insert into rollup_measures as m
    (tenant, grain, dimension, dimension_id, period_start, measure, value)
select $1, * from unnest(
    $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::bigint[])
on conflict (tenant, grain, dimension, dimension_id, period_start, measure)
do update set value = m.value + excluded.value
returning grain, dimension, dimension_id, period_start, measure, value
"""

_DROP_EMPTY_ROLLUPS = """
delete from rollup_measures m using unnest(
    $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
    as z(grain, dimension, dimension_id, period_start, measure)
where m.tenant = $1 and m.grain = z.grain and m.dimension = z.dimension
  and m.dimension_id = z.dimension_id and m.period_start = z.period_start
  and m.measure = z.measure and m.value = 0
"""

_UPSERT_CALL_RECORD = """
insert into call_records as r (tenant, call_id, direction, started_at, answered_at, ended_at,
    outcome, end_cause, ani, dnis, campaign_id, queues, agents, wait_ms, talk_ms, hold_ms,
    wrap_up_ms, transfers)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
on conflict (tenant, call_id) do update set
    direction = excluded.direction, started_at = excluded.started_at,
    answered_at = excluded.answered_at, ended_at = excluded.ended_at,
    outcome = excluded.outcome, end_cause = excluded.end_cause, ani = excluded.ani,
    dnis = excluded.dnis, campaign_id = excluded.campaign_id, queues = excluded.queues,
    agents = excluded.agents, wait_ms = excluded.wait_ms, talk_ms = excluded.talk_ms,
    hold_ms = excluded.hold_ms, wrap_up_ms = excluded.wrap_up_ms,
    transfers = excluded.transfers
"""

_UPSERT_AGENT_STATUS = """
insert into agent_status as s (tenant, agent_id, state, since, pause_code, call_id, queue_id,
    extension, skills, version)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
on conflict (tenant, agent_id) do update set
    state = excluded.state, since = excluded.since, pause_code = excluded.pause_code,
    call_id = excluded.call_id, queue_id = excluded.queue_id, extension = excluded.extension,
    skills = excluded.skills, version = excluded.version
"""


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

    # -- calls

    async def _apply_call(self, conn: Connection, tenant: str, fact: CallFact) -> None:
        kept = await conn.fetchval(
            "insert into call_facts (tenant, call_id, stream, stream_version, fact) "
            "values ($1, $2, $3, $4, $5) on conflict do nothing returning 1",
            tenant,
            fact.call_id,
            fact.stream,
            fact.stream_version,
            fact.to_json(),
        )
        if kept is None:
            return
        rows = await conn.fetch(
            "select fact from call_facts where tenant = $1 and call_id = $2", tenant, fact.call_id
        )
        detail = assemble(fact.call_id, [CallFact.from_json(r["fact"]) for r in rows])
        new = contribution(detail)
        old_rows = await conn.fetch(
            "select dimension, dimension_id, interval_start, measure, value "
            "from call_contributions where tenant = $1 and call_id = $2",
            tenant,
            fact.call_id,
        )
        old = {
            Key(
                Dimension(r["dimension"]),
                r["dimension_id"],
                to_ms(r["interval_start"]),
                r["measure"],
            ): r["value"]
            for r in old_rows
        }
        change = delta(old, new)
        if change:
            await self._add_measures(conn, tenant, change)
            await conn.execute(
                "delete from call_contributions where tenant = $1 and call_id = $2",
                tenant,
                fact.call_id,
            )
            keys = [k for k, v in new.items() if v]
            await conn.execute(
                "insert into call_contributions (tenant, call_id, dimension, dimension_id, "
                "interval_start, measure, value) select $1, $2, * from unnest($3::text[], "
                "$4::text[], $5::timestamptz[], $6::text[], $7::bigint[])",
                tenant,
                fact.call_id,
                [k.dimension.value for k in keys],
                [k.dimension_id for k in keys],
                [from_ms(k.interval_ms) for k in keys],
                [k.measure for k in keys],
                [new[k] for k in keys],
            )
        await self._write_call_record(conn, tenant, detail)
        await conn.execute(
            "delete from queue_waiting where tenant = $1 and call_id = $2", tenant, fact.call_id
        )
        waiting = detail.open_visit
        if waiting is not None:
            await conn.execute(
                "insert into queue_waiting (tenant, call_id, queue_id, waiting_since) "
                "values ($1, $2, $3, $4)",
                tenant,
                fact.call_id,
                waiting.queue_id,
                from_ms(waiting.entered_ms),
            )
        queues = {v.queue_id for v in detail.visits} | {
            s.queue_id for s in detail.segments if s.queue_id
        }
        await self._changed(
            conn,
            tenant,
            call=fact.call_id,
            queues=sorted(q for q in queues if q),
            agents=sorted({s.agent_id for s in detail.segments}),
            campaign=detail.campaign_id,
        )

    async def _write_call_record(self, conn: Connection, tenant: str, detail: CallDetail) -> None:
        answered = detail.segments[0].connected_ms if detail.segments else None
        queues = list(dict.fromkeys(v.queue_id for v in detail.visits))
        agents = list(dict.fromkeys(s.agent_id for s in detail.segments))
        await conn.execute(
            _UPSERT_CALL_RECORD,
            tenant,
            detail.call_id,
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
        )

    # -- agents

    async def _apply_agent(self, conn: Connection, tenant: str, fact: AgentFact) -> None:
        row = await conn.fetchrow(
            "select * from agent_status where tenant = $1 and agent_id = $2 for update",
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
        if span is not None:
            await conn.execute(
                "insert into agent_state_spans (tenant, agent_id, opened_by, state, pause_code, "
                "call_id, started_at, ended_at) values ($1, $2, $3, $4, $5, $6, $7, $8)",
                tenant,
                span.agent_id,
                span.opened_by,
                span.state.value,
                span.pause_code,
                span.call_id,
                from_ms(span.start_ms),
                from_ms(span.end_ms),
            )
            await self._add_measures(conn, tenant, span_contribution(span))
        await conn.execute(
            _UPSERT_AGENT_STATUS,
            tenant,
            new.agent_id,
            new.state.value,
            from_ms(new.since_ms),
            new.pause_code,
            new.call_id,
            new.queue_id,
            new.extension,
            list(new.skills),
            new.version,
        )
        await self._changed(conn, tenant, agents=[fact.agent_id])

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
        await self._changed(conn, tenant, queues=[setting.queue_id])

    # -- measures

    async def _add_measures(self, conn: Connection, tenant: str, change: Mapping[Key, int]) -> None:
        """Add ``change`` to the interval measures and their roll-ups; drop rows left at 0.

        Zero rows are dropped so that measures built incrementally and measures rebuilt
        from scratch hold exactly the same rows.
        """
        if not change:
            return
        keys = sorted(change)
        rows = await conn.fetch(
            _UPSERT_INTERVALS,
            tenant,
            [k.dimension.value for k in keys],
            [k.dimension_id for k in keys],
            [from_ms(k.interval_ms) for k in keys],
            [k.measure for k in keys],
            [change[k] for k in keys],
        )
        emptied = [r for r in rows if r["value"] == 0]
        if emptied:
            await conn.execute(
                _DROP_EMPTY_INTERVALS,
                tenant,
                [r["dimension"] for r in emptied],
                [r["dimension_id"] for r in emptied],
                [r["interval_start"] for r in emptied],
                [r["measure"] for r in emptied],
            )
        zone = await self._zones.zone(conn, tenant)
        rollups: dict[tuple[str, str, str, datetime, str], int] = defaultdict(int)
        for key, value in change.items():
            for grain in Grain:
                period = period_start(key.interval_ms, grain, zone)
                rollups[
                    (grain.value, key.dimension.value, key.dimension_id, period, key.measure)
                ] += value
        keyed = sorted(k for k, v in rollups.items() if v)
        if not keyed:
            return
        rows = await conn.fetch(
            _UPSERT_ROLLUPS,
            tenant,
            [k[0] for k in keyed],
            [k[1] for k in keyed],
            [k[2] for k in keyed],
            [k[3] for k in keyed],
            [k[4] for k in keyed],
            [rollups[k] for k in keyed],
        )
        emptied = [r for r in rows if r["value"] == 0]
        if emptied:
            await conn.execute(
                _DROP_EMPTY_ROLLUPS,
                tenant,
                [r["grain"] for r in emptied],
                [r["dimension"] for r in emptied],
                [r["dimension_id"] for r in emptied],
                [r["period_start"] for r in emptied],
                [r["measure"] for r in emptied],
            )

    async def _changed(
        self,
        conn: Connection,
        tenant: str,
        *,
        call: str | None = None,
        queues: list[str] | None = None,
        agents: list[str] | None = None,
        campaign: str | None = None,
    ) -> None:
        if not self._notify:
            return
        payload = {"tenant": tenant, "queues": queues or [], "agents": agents or []}
        if call is not None:
            payload["call"] = call
        if campaign is not None:
            payload["campaign"] = campaign
        await conn.execute("select pg_notify($1, $2)", CHANNEL, json.dumps(payload))


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)
