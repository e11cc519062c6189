"""Writes the read models in PostgreSQL: events' effects, inside the caller's transaction.

``Projection.apply_batch`` is the consumer's batch handler: ``apply_batch_once`` runs it in
the transaction that also records the poll's events as applied, so effects and checkpoints
commit together, one transaction per poll. ``Projection.apply`` is the same for one event.
The projection is idempotent on its own too (a call fact already kept, or an agent fact
not newer than the agent's status, changes nothing), which lets a rebuild replay stores
without checkpoints of its own.

Each change also sends a PostgreSQL notification on ``CHANNEL`` (delivered at commit): one
per call and per agent a batch changed; the access gateway listens and pushes the affected
view to browsers.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from plateau_contracts.envelope import Envelope
from plateau_runtime.db import Connection
from plateau_stats_projector.domain.agents import (
    AgentStatus,
    StateSpan,
    advance,
    span_contribution,
)
from plateau_stats_projector.domain.calls import assemble, contribution
from plateau_stats_projector.domain.contributions import Key, delta
from plateau_stats_projector.domain.facts import (
    AgentFact,
    AgentState,
    CallFact,
    CallFactKind,
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
from plateau_stats_projector.domain.ledger import LedgerEntry, ledger_entry, merge_entries
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

# The server-side steps are in migrations/0008_batch_projection.sql (and 0004 for
# campaigns): a batch of events costs, per tenant, a claim of its call facts, a read of its
# agents' statuses and one write of each kind, whatever the number of events.
_KEEP_CALL_FACTS = (
    "select kept_call_id, facts, contribution from keep_call_facts($1, $2, $3, $4, $5)"
)
_PROJECT_CALLS = "select project_calls(" + ", ".join(f"${n}" for n in range(1, 24)) + ")"
_PROJECT_AGENTS = "select project_agents(" + ", ".join(f"${n}" for n in range(1, 17)) + ")"
#: Empty measure arrays (``add_measures`` then changes nothing).
_NO_MEASURES: MeasureArrays = ([], [], [], [], [], [], [], [], [], [], [])
_PROJECT_CAMPAIGN = "select project_campaign(" + ", ".join(f"${n}" for n in range(1, 12)) + ")"

# The compliance ledger (migrations/0010): each column is set by one kind of fact and only
# filled in, never cleared, so entries merge into the same row in any order.
_LEDGER_COLUMNS = [
    f.name for f in LedgerEntry.__dataclass_fields__.values() if f.name not in ("ledger_id",)
]
_KEEP_LEDGER_ENTRIES = (
    "insert into compliance_ledger as l (tenant, ledger_id, "
    + ", ".join(_LEDGER_COLUMNS)
    + ") select $1, n.ledger_id, "
    + ", ".join(f"n.{c}" for c in _LEDGER_COLUMNS)
    + " from jsonb_populate_recordset(null::compliance_ledger, $2) n"
    + " on conflict (tenant, ledger_id) do update set "
    + ", ".join(f"{c} = coalesce(l.{c}, excluded.{c})" for c in _LEDGER_COLUMNS)
)
# A dial's connection to an agent is a fact of its call (kept in call_facts), which may be
# kept before or after the dialer's row names the call: both orders end here.
_LEDGER_OUTCOMES = """
with touched as (
    select r.ledger_id, r.abandoned_at, r.dial_outcome, r.dial_completed_at, (
        select to_timestamp(min((f.fact->>'at_ms')::bigint) / 1000.0) from call_facts f
        where f.tenant = r.tenant and f.call_id = r.call_id and f.fact->>'kind' = 'connected'
    ) as connected_at
    from compliance_ledger r
    where r.tenant = $1 and r.source = 'dialer'
      and r.ledger_id = any($2::text[] || array(
          select x.ledger_id from compliance_ledger x
          where x.tenant = $1 and x.call_id = any($3::text[])))
), outcomes as (
    select ledger_id, connected_at,
        case when abandoned_at is not null then 'compliance_abandoned'
             when connected_at is not null then 'connected'
             else dial_outcome end as outcome,
        case when abandoned_at is not null then abandoned_at
             when connected_at is not null then connected_at
             else dial_completed_at end as outcome_at
    from touched
)
update compliance_ledger l
set connected_at = o.connected_at, outcome = o.outcome, outcome_at = o.outcome_at
from outcomes o
where l.tenant = $1 and l.ledger_id = o.ledger_id
  and (l.connected_at, l.outcome, l.outcome_at)
      is distinct from (o.connected_at, o.outcome, o.outcome_at)
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
        await self.apply_batch(conn, [envelope])

    async def apply_batch(self, conn: Connection, envelopes: Sequence[Envelope]) -> None:
        """The effect of events (in their order) on the read models, on ``conn``.

        The consumer's batch handler: the same rows as applying them one by one, in a few
        round trips per tenant. Each call the events touch is recomputed once from all its
        facts, and each agent's facts are folded in order onto its stored status.
        """
        calls: dict[str, list[CallFact]] = defaultdict(list)
        agents: dict[str, list[AgentFact]] = defaultdict(list)
        campaigns: list[tuple[str, CampaignFact]] = []
        ledger: dict[str, list[LedgerEntry]] = defaultdict(list)
        connected: dict[str, set[str]] = defaultdict(set)
        for envelope in envelopes:
            facts = facts_of(envelope)
            tenant = envelope.tenant
            entry = ledger_entry(envelope)
            if entry is not None:
                ledger[tenant].append(entry)
            if facts.call is not None and facts.call.kind is CallFactKind.CONNECTED:
                connected[tenant].add(facts.call.call_id)
            if facts.call is not None:
                calls[tenant].append(facts.call)
            if facts.agent is not None:
                agents[tenant].append(facts.agent)
            if facts.queue is not None:
                await self._apply_queue(conn, tenant, facts.queue)
            if facts.campaign is not None:
                campaigns.append((tenant, facts.campaign))
        # Shared rows (a campaign's, a queue's or an agent's intervals) are written in one
        # order, tenant by tenant and key by key, and the measures of calls and agents in
        # one statement: concurrent batches (several consumers, a rebuild's catch-up) then
        # take their row locks in the same order and cannot deadlock. A campaign's values
        # do not depend on the order of its facts (docs/metrics.md).
        for tenant, campaign in sorted(campaigns, key=lambda c: (c[0], c[1].campaign_id)):
            await self._apply_campaign(conn, tenant, campaign)
        for tenant in sorted(calls.keys() | agents.keys()):
            change: Counter[Key] = Counter()
            if tenant in calls:
                change = await self._apply_calls(conn, tenant, calls[tenant])
            await self._apply_agents(conn, tenant, agents.get(tenant, []), change)
        # After the calls: their facts (a dial's connection) are kept by then.
        for tenant in sorted(ledger.keys() | connected.keys()):
            await self._apply_ledger(conn, tenant, ledger.get(tenant, []), connected[tenant])

    # -- calls

    async def _apply_calls(
        self, conn: Connection, tenant: str, facts: list[CallFact]
    ) -> Counter[Key]:
        """Keep the calls' facts and write what their recomputation changes, except the
        measures: their change is returned, for ``_apply_agents`` to write."""
        kept = await conn.fetch(
            _KEEP_CALL_FACTS,
            tenant,
            [f.call_id for f in facts],
            [f.stream for f in facts],
            [f.stream_version for f in facts],
            [f.to_json() for f in facts],
        )
        change: Counter[Key] = Counter()
        if not kept:
            return change
        contributions: list[tuple[str, Key, int]] = []
        records: list[dict[str, object]] = []
        waiting: list[dict[str, object]] = []
        not_waiting: list[str] = []
        notifications: list[str] = []
        for row in sorted(kept, key=lambda r: str(r["kept_call_id"])):
            call_id = row["kept_call_id"]
            detail = assemble(call_id, [CallFact.from_json(f) for f in row["facts"]])
            old = {
                Key(Dimension(d), owner, interval, measure): value
                for d, owner, interval, measure, value in row["contribution"]
            }
            call_change = delta(old, contribution(detail))
            change.update(call_change)
            contributions += [(call_id, key, value) for key, value in call_change.items()]
            answered = detail.segments[0].connected_ms if detail.segments else None
            queues = list(dict.fromkeys(v.queue_id for v in detail.visits))
            agent_ids = list(dict.fromkeys(s.agent_id for s in detail.segments))
            records.append(
                {
                    "tenant": tenant,
                    "call_id": call_id,
                    "direction": detail.direction,
                    "started_at": _iso(detail.started_ms),
                    "answered_at": _iso(answered),
                    "ended_at": _iso(detail.ended_ms),
                    "outcome": detail.outcome,
                    "end_cause": detail.end_cause,
                    "ani": detail.ani,
                    "dnis": detail.dnis,
                    "campaign_id": detail.campaign_id,
                    "queues": queues,
                    "agents": agent_ids,
                    "wait_ms": detail.wait_ms(),
                    "talk_ms": detail.talk_ms(),
                    "hold_ms": detail.hold_ms(),
                    "wrap_up_ms": detail.wrap_ms(),
                    "transfers": detail.transfers,
                }
            )
            visit = detail.open_visit
            if visit is None:
                not_waiting.append(call_id)
            else:
                waiting.append(
                    {
                        "tenant": tenant,
                        "call_id": call_id,
                        "queue_id": visit.queue_id,
                        "waiting_since": _iso(visit.entered_ms),
                    }
                )
            touched = sorted(set(queues) | {s.queue_id for s in detail.segments if s.queue_id})
            notifications.append(
                self._payload(
                    tenant,
                    call=call_id,
                    queues=touched,
                    agents=sorted(set(agent_ids)),
                    campaign=detail.campaign_id,
                )
            )
        contributions.sort(key=lambda c: (c[0], c[1]))
        await conn.execute(
            _PROJECT_CALLS,
            tenant,
            *_NO_MEASURES,
            [c[0] for c in contributions],
            [c[1].dimension.value for c in contributions],
            [c[1].dimension_id for c in contributions],
            [from_ms(c[1].interval_ms) for c in contributions],
            [c[1].measure for c in contributions],
            [c[2] for c in contributions],
            records,
            waiting,
            not_waiting,
            CHANNEL if self._notify else None,
            notifications,
        )
        return change

    # -- agents

    async def _apply_agents(
        self, conn: Connection, tenant: str, facts: list[AgentFact], change: Counter[Key]
    ) -> None:
        """Fold the agents' facts onto their statuses, and write their spans and statuses
        with the measures of their spans and ``change`` (the calls')."""
        rows = []
        if facts:
            rows = await conn.fetch(
                "select * from agent_status where tenant = $1 and agent_id = any($2::text[])",
                tenant,
                list({f.agent_id for f in facts}),
            )
        statuses: dict[str, AgentStatus] = {
            row["agent_id"]: AgentStatus(
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
            for row in rows
        }
        changed: set[str] = set()
        spans: list[StateSpan] = []
        for fact in facts:
            status = statuses.get(fact.agent_id)
            if status is not None and fact.stream_version <= status.version:
                continue
            new, span = advance(status, fact)
            statuses[fact.agent_id] = new
            changed.add(fact.agent_id)
            if span is not None:
                spans.append(span)
                change.update(span_contribution(span))
        if not changed and not any(change.values()):
            return
        await conn.execute(
            _PROJECT_AGENTS,
            tenant,
            [
                {
                    "tenant": tenant,
                    "agent_id": span.agent_id,
                    "opened_by": span.opened_by,
                    "state": span.state.value,
                    "pause_code": span.pause_code,
                    "call_id": span.call_id,
                    "started_at": _iso(span.start_ms),
                    "ended_at": _iso(span.end_ms),
                }
                for span in spans
            ],
            *await self._measure_arrays(conn, tenant, change),
            [
                {
                    "tenant": tenant,
                    "agent_id": new.agent_id,
                    "state": new.state.value,
                    "since": _iso(new.since_ms),
                    "pause_code": new.pause_code,
                    "call_id": new.call_id,
                    "queue_id": new.queue_id,
                    "extension": new.extension,
                    "skills": list(new.skills),
                    "version": new.version,
                }
                for new in (statuses[agent_id] for agent_id in sorted(changed))
            ],
            CHANNEL if self._notify else None,
            [self._payload(tenant, agents=[agent_id]) for agent_id in sorted(changed)],
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

    # -- the compliance ledger

    async def _apply_ledger(
        self, conn: Connection, tenant: str, entries: list[LedgerEntry], connected: set[str]
    ) -> None:
        """Merge the entries into their rows and recompute the outcomes they may change."""
        rows = merge_entries(entries)
        if rows:
            await conn.execute(_KEEP_LEDGER_ENTRIES, tenant, [row.to_json() for row in rows])
        call_ids = connected | {row.call_id for row in rows if row.call_id is not None}
        # No notification: nothing live shows the ledger (the campaign's own facts notify).
        await conn.execute(
            _LEDGER_OUTCOMES, tenant, [row.ledger_id for row in rows], sorted(call_ids)
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

    def _payload(
        self,
        tenant: str,
        *,
        call: str | None = None,
        queues: list[str] | None = None,
        agents: list[str] | None = None,
        campaign: str | None = None,
    ) -> str:
        """The JSON payload announcing a change."""
        payload: dict[str, object] = {
            "tenant": tenant,
            "queues": queues or [],
            "agents": agents or [],
        }
        if call is not None:
            payload["call"] = call
        if campaign is not None:
            payload["campaign"] = campaign
        return json.dumps(payload)

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
        return CHANNEL, self._payload(
            tenant, call=call, queues=queues, agents=agents, campaign=campaign
        )


def _iso(ms: int | None) -> str | None:
    """An instant as JSON gives it to ``jsonb_populate_recordset`` (a timestamptz)."""
    return None if ms is None else from_ms(ms).isoformat()
