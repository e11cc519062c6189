"""The stats projector's read models, read under the database's own tenant isolation.

Every read runs in a transaction that first switches to the projector's reader role
(``set local role``) and sets ``plateau.tenant`` to the principal's tenant: the read
models' row-level security then hides every other tenant's row, whatever the query says.
The scope of a user inside the tenant (some queues, some campaigns) is applied here, in SQL.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from plateau_access_gateway.domain.principal import Principal
from plateau_runtime.db import Connection
from plateau_runtime.services import service

__all__ = [
    "CallFilter",
    "ComplianceFilter",
    "JsonReport",
    "Provenance",
    "ReadModels",
    "Reading",
    "Row",
]

Row = dict[str, Any]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_QUEUES = """
with ids as (
    select tenant, queue_id from queue_settings
    union select tenant, queue_id from queue_live
    union select tenant, queue_id from queue_today_metrics
)
select i.queue_id, s.name, s.service_level_target,
       coalesce(m.service_level_threshold_s, s.service_level_threshold_s, 20)
           as service_level_threshold_s,
       coalesce(l.calls_waiting, 0) as calls_waiting, l.longest_waiting_since,
       coalesce(m.measures, '{}'::jsonb) as measures,
       m.service_level, m.asa_ms, m.aht_ms, m.abandonment_rate,
       coalesce((
           select jsonb_agg(jsonb_build_object(
               'state', a.state, 'pause_code', a.pause_code, 'agents', a.agents)
               order by a.state, a.pause_code)
           from queue_agents_by_state a where a.tenant = i.tenant and a.queue_id = i.queue_id
       ), '[]'::jsonb) as agents_by_state
from ids i
left join queue_settings s on s.tenant = i.tenant and s.queue_id = i.queue_id
left join queue_live l on l.tenant = i.tenant and l.queue_id = i.queue_id
left join queue_today_metrics m on m.tenant = i.tenant and m.queue_id = i.queue_id
where ($1::text[] is null or i.queue_id = any($1))
  and ($2::text is null or i.queue_id = $2)
order by i.queue_id
"""

# With a queue scope, an agent is visible when it can take calls of one of those queues
# (it holds every skill the queue requires), as the supervision views count it.
_AGENTS = """
select s.agent_id, s.state, s.since, s.pause_code, s.call_id, s.queue_id, s.extension,
       s.skills, coalesce(measure(m.measures, 'handled'), 0) as handled_today,
       coalesce(m.measures, '{}'::jsonb) as measures, m.occupancy, m.aht_ms
from agent_status s
left join agent_today_metrics m on m.tenant = s.tenant and m.agent_id = s.agent_id
where ($1::text[] is null or exists (
          select 1 from queue_settings q
          where q.tenant = s.tenant and q.queue_id = any($1) and q.required_skills <@ s.skills))
  and ($2::text is null or s.agent_id = $2)
order by s.agent_id
"""

_CAMPAIGNS = """
with ids as (
    select tenant, campaign_id from campaign_status
    union select tenant, campaign_id from campaign_today
    union select tenant, campaign_id from campaign_last_30_days
)
select i.campaign_id, c.name, c.status, c.list_version, c.contacts_in_list,
       coalesce(c.contacts_dialled, 0) as contacts_dialled, c.dial_level,
       coalesce(t.measures, '{}'::jsonb) as today,
       compliance_abandonment_rate(coalesce(t.measures, '{}'::jsonb))
           as today_compliance_abandonment_rate,
       coalesce(d.measures, '{}'::jsonb) as last_30_days,
       compliance_abandonment_rate(coalesce(d.measures, '{}'::jsonb))
           as last_30_days_compliance_abandonment_rate
from ids i
left join campaign_status c on c.tenant = i.tenant and c.campaign_id = i.campaign_id
left join campaign_today t on t.tenant = i.tenant and t.campaign_id = i.campaign_id
left join campaign_last_30_days d on d.tenant = i.tenant and d.campaign_id = i.campaign_id
where ($1::text[] is null or i.campaign_id = any($1))
  and ($2::text is null or i.campaign_id = $2)
order by i.campaign_id
"""

# An interval report: one JSON object per row, as GET /api/v1/reports/{kind} serves it,
# in report order. The stats projector makes them (report_rows, its migrations/0012) with
# its metric functions, so the gateway computes no figure of its own; the ids are the
# user's scope, checked before (entrypoints/http_reports.resolve_report).
_REPORT_JSON = "select r from report_rows($1, $2, $3, $4, $5) r"

# For a report's transaction only: a plan for the values asked (a cached generic plan
# keeps both tables and guesses the rows, then sorts); the read models as mostly in memory,
# as they are read soon after they are written, so that the planner walks the primary key
# in report order rather than sorting 57,600 wide rows of a 30-day report; and room to sort
# in memory when it does sort (a list of ids).
_REPORT_PLANNING = (
    "select set_config('plan_cache_mode', 'force_custom_plan', true), "
    "set_config('random_page_cost', '1.1', true), set_config('work_mem', '64MB', true)"
)

#: Pieces of a report (tens of kilobytes each) read ahead of the client.
_PIECES_AHEAD = 16

_PROVENANCE = (
    'select source, "position", chain_head, applied_at from report_provenance() order by source'
)

_CALL_COLUMNS = (
    "call_id, direction, started_at, answered_at, ended_at, outcome, end_cause, ani, dnis, "
    "campaign_id, queues, agents, wait_ms, talk_ms, hold_ms, wrap_up_ms, transfers"
)

# Keyset pagination on (started_at, call_id): a page starts strictly after the last row
# of the previous one, so rows inserted meanwhile never shift or repeat a page.
_CALLS = f"""
select {_CALL_COLUMNS}
from call_records
where started_at is not null
  and ($1::timestamptz is null or started_at >= $1)
  and ($2::timestamptz is null or started_at < $2)
  and ($3::text is null or $3 = any(queues))
  and ($4::text is null or $4 = any(agents))
  and ($5::text is null or outcome = $5)
  and ($6::text is null or direction = $6)
  and ($7::text[] is null or queues && $7)
  and ($8::text[] is null or campaign_id is null or campaign_id = any($8))
  and ($9::timestamptz is null or (started_at, call_id) > ($9, $10::text))
order by started_at, call_id
"""

#: The compliance ledger's columns a client sees (the stats projector's migrations/0010).
COMPLIANCE_COLUMNS = (
    "ledger_id",
    "source",
    "checked_at",
    "campaign_id",
    "contact_id",
    "attempt_id",
    "number",
    "attempt_number",
    "max_attempts",
    "list_version",
    "decision",
    "refusal",
    "on_do_not_call",
    "do_not_call_version",
    "within_calling_window",
    "local_time",
    "requested_by",
    "requester",
    "call_id",
    "dialled_at",
    "outcome",
    "sip_code",
    "outcome_at",
)

_COMPLIANCE_CAMPAIGN = """
select exists (select 1 from campaign_status where campaign_id = $1)
    or exists (select 1 from compliance_ledger where campaign_id = $1)
"""


@dataclass(frozen=True)
class Provenance:
    """What figures were computed from: each source's last applied position and chain head
    (``source``, ``position``, ``chain_head``, ``applied_at``), and the formula versions."""

    sources: list[Row]
    formula_versions: dict[str, int]


@dataclass(frozen=True)
class Reading:
    """Rows read in one snapshot, with the provenance of that snapshot."""

    provenance: Provenance
    rows: AsyncIterator[Row]


@dataclass(frozen=True)
class JsonReport:
    """A report's rows as a JSON array (UTF-8) in pieces, as they are read, and the
    provenance of the snapshot they are read in."""

    provenance: Provenance
    rows: AsyncIterator[bytes]


@dataclass(frozen=True)
class CallFilter:
    """What a call detail search asks for (None: any)."""

    start: datetime | None = None
    end: datetime | None = None
    queue: str | None = None
    agent: str | None = None
    outcome: str | None = None
    direction: str | None = None


@dataclass(frozen=True)
class ComplianceFilter:
    """What a compliance ledger search asks for (None: any)."""

    start: datetime | None = None
    end: datetime | None = None
    campaign: str | None = None
    decision: str | None = None


def _scope(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


class ReadModels:
    """Reads of the supervision and reporting read models, each scoped to a principal."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        schema: str | None = None,
        reader_role: str | None = None,
    ) -> None:
        projector = service("stats-projector")
        self._schema = schema or projector.schema
        self._reader_role = reader_role or f"plateau_{self._schema}_reader"
        for name in (self._schema, self._reader_role):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")
        self._pool = pool

    @asynccontextmanager
    async def scoped(self, tenant: str, *, snapshot: bool = False) -> AsyncIterator[Connection]:
        """A connection in a transaction that sees only ``tenant``'s rows, read-only; with
        ``snapshot``, every statement of it sees the same committed state."""
        async with (
            self._pool.acquire() as conn,
            conn.transaction(
                isolation="repeatable_read" if snapshot else "read_committed", readonly=True
            ),
        ):
            # One round trip: set_config(..., true) is SET LOCAL (the role's too), undone
            # at the end of the transaction, so a pooled connection keeps none of it.
            await conn.execute(
                "select set_config('role', $1, true), set_config('plateau.tenant', $2, true), "
                "set_config('search_path', $3, true)",
                self._reader_role,
                tenant,
                self._schema,
            )
            yield conn

    # -- supervision

    async def queues(self, principal: Principal, queue_id: str | None = None) -> list[Row]:
        async with self.scoped(principal.tenant) as conn:
            rows = await conn.fetch(_QUEUES, _scope(principal.queue_scope), queue_id)
        return [dict(r) for r in rows]

    async def agents(self, principal: Principal, agent_id: str | None = None) -> list[Row]:
        async with self.scoped(principal.tenant) as conn:
            rows = await conn.fetch(_AGENTS, _scope(principal.queue_scope), agent_id)
        return [dict(r) for r in rows]

    async def campaigns(self, principal: Principal, campaign_id: str | None = None) -> list[Row]:
        async with self.scoped(principal.tenant) as conn:
            rows = await conn.fetch(_CAMPAIGNS, _scope(principal.campaign_scope), campaign_id)
        return [dict(r) for r in rows]

    async def agent_visible(self, principal: Principal, agent_id: str) -> bool:
        return bool(await self.agents(principal, agent_id))

    # -- reports

    async def _provenance(self, conn: Connection) -> tuple[list[Row], dict[str, int]]:
        sources = await conn.fetch(_PROVENANCE)
        versions = await conn.fetch("select metric, version from metric_formulas")
        return [dict(r) for r in sources], {r["metric"]: r["version"] for r in versions}

    async def provenance(self, principal: Principal) -> Provenance:
        """Up to which position and chain head of each source the read models are computed,
        and the version of each metric formula (docs/metrics.md)."""
        async with self.scoped(principal.tenant) as conn:
            return Provenance(*await self._provenance(conn))

    @asynccontextmanager
    async def _snapshot(
        self, principal: Principal, planning: str | None = None
    ) -> AsyncIterator[tuple[Connection, Provenance]]:
        # Repeatable read: the rows are exactly what the provenance says they were computed
        # from, even while the projector commits more.
        async with self.scoped(principal.tenant, snapshot=True) as conn:
            if planning is not None:
                await conn.execute(planning)
            yield conn, Provenance(*await self._provenance(conn))

    @asynccontextmanager
    async def _reading(
        self,
        principal: Principal,
        query: str,
        *args: object,
        planning: str | None = None,
        shape: Callable[[asyncpg.Record], Row] = dict,
    ) -> AsyncIterator[Reading]:
        async with self._snapshot(principal, planning) as (conn, provenance):
            yield Reading(provenance, (shape(r) async for r in conn.cursor(query, *args)))

    def report(  # noqa: PLR0917 - the report's own parameters
        self,
        principal: Principal,
        dimension: str,
        ids: Sequence[str] | None,
        start: datetime,
        end: datetime,
        granularity: str,
    ) -> AbstractAsyncContextManager[Reading]:
        """The report's rows as a server-side cursor (bounded memory), with its provenance:
        ``dimension``, ``dimension_id``, ``period_start``, ``measures``, each metric and
        ``service_level_threshold_s`` (None but for queues).

        ``ids`` None: every object of the dimension; an empty list: none.
        """
        wanted = None if ids is None else list(ids)

        def shape(record: asyncpg.Record) -> Row:
            row = json.loads(record[0])
            return {
                "dimension": dimension,
                "dimension_id": row["id"],
                "period_start": datetime.fromisoformat(row["period_start"]),
                "measures": row["measures"],
                **row["metrics"],
            }

        return self._reading(
            principal,
            _REPORT_JSON,
            dimension,
            wanted,
            start,
            end,
            granularity,
            planning=_REPORT_PLANNING,
            shape=shape,
        )

    @asynccontextmanager
    async def report_json(  # noqa: PLR0917 - the report's own parameters
        self,
        principal: Principal,
        dimension: str,
        ids: Sequence[str] | None,
        start: datetime,
        end: datetime,
        granularity: str,
    ) -> AsyncIterator[JsonReport]:
        """The rows of :meth:`report` as the JSON array the report endpoint serves, as the
        database made them, with their provenance, read in one snapshot while the context
        is open. Decoding each row here and encoding it again took more than ten times as
        long (bench/projections.py)."""
        wanted = None if ids is None else list(ids)
        # A few pieces ahead at most: memory stays bounded whatever the report's size, and
        # PostgreSQL waits while the client is slower.
        pieces: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_PIECES_AHEAD)
        unread = asyncio.Event()  # the reader went away: the rest is dropped

        async def rows(chunk: bytes) -> None:
            if chunk and not unread.is_set():  # each line is one row: a comma after each
                await pieces.put(bytes(chunk.replace(b"\n", b",")))

        async with self._snapshot(principal, _REPORT_PLANNING) as (conn, provenance):

            async def copy() -> None:
                # Copied out as CSV with a delimiter and a quote that JSON text never holds
                # unescaped (control characters), so each row comes out exactly as made,
                # one per line: no quoting, no escaping, nothing to decode. COPY streams,
                # and it plans the query for the values asked, so the table of the other
                # granularity is pruned.
                try:
                    await conn.copy_from_query(
                        _REPORT_JSON,
                        dimension,
                        wanted,
                        start,
                        end,
                        granularity,
                        output=rows,
                        format="csv",
                        delimiter="\x02",
                        quote="\x01",
                    )
                finally:
                    # The end, after the last row or an error (array() then awaits this
                    # task, which raises it).
                    if not unread.is_set():
                        await pieces.put(None)

            copying = asyncio.create_task(copy())

            async def array() -> AsyncIterator[bytes]:
                yield b"["
                held = b""  # the last piece ends with the last row's comma
                while (piece := await pieces.get()) is not None:
                    if held:
                        yield held
                    held = piece
                await copying  # its error, if it failed
                yield held.removesuffix(b",") + b"]"

            try:
                yield JsonReport(provenance, array())
            finally:
                # A reader that stops early: the copy runs to its end, its rows dropped, so
                # that the connection leaves the COPY and the transaction ends cleanly (a
                # COPY cancelled half-way leaves the connection unusable).
                unread.set()
                while not pieces.empty():
                    pieces.get_nowait()
                with suppress(Exception):
                    await copying

    # -- call detail records

    def calls(
        self,
        principal: Principal,
        where: CallFilter,
        after: tuple[datetime, str] | None = None,
        limit: int | None = None,
    ) -> AbstractAsyncContextManager[Reading]:
        """Call detail records in (started_at, call_id) order, after ``after`` when given."""
        query = _CALLS if limit is None else f"{_CALLS} limit {int(limit)}"
        return self._reading(
            principal,
            query,
            where.start,
            where.end,
            where.queue,
            where.agent,
            where.outcome,
            where.direction,
            _scope(principal.queue_scope),
            _scope(principal.campaign_scope),
            after[0] if after else None,
            after[1] if after else None,
        )

    # -- the compliance ledger

    async def compliance_campaign_known(self, principal: Principal, campaign_id: str) -> bool:
        """Whether the principal's tenant has this campaign (its status or ledger rows)."""
        async with self.scoped(principal.tenant) as conn:
            return bool(await conn.fetchval(_COMPLIANCE_CAMPAIGN, campaign_id))

    def compliance(
        self,
        principal: Principal,
        where: ComplianceFilter,
        after: tuple[datetime, str] | None = None,
        limit: int | None = None,
    ) -> AbstractAsyncContextManager[Reading]:
        """Compliance ledger rows in (checked_at, ledger_id) order, after ``after`` if given."""
        query, args = compliance_query(
            principal.tenant, where, _scope(principal.campaign_scope), after, limit
        )
        return self._reading(principal, query, *args)


def compliance_query(
    tenant: str,
    where: ComplianceFilter,
    campaigns: list[str] | None,
    after: tuple[datetime, str] | None,
    limit: int | None,
) -> tuple[str, list[object]]:
    """The ledger query with only the conditions asked for, and its arguments.

    One row per dial check, keyset-paged on (checked_at, ledger_id) like the calls. Only
    the filters given become conditions: a generic plan full of ``$n is null or ...``
    misjudges how many rows match and sorts the whole ledger instead of walking the index.
    A row whose check is not projected yet (only its outcome arrived) is not a check: left
    out. With a campaign scope (``campaigns``), only those campaigns' rows: the gateway's
    refusals that name no campaign (an agent's softphone) are for users who see all.
    The tenant is named too, although row-level security already holds the rows to it:
    the planner can estimate a value's rows, not those of the policy's setting.
    """
    conditions = ["tenant = $1::text", "checked_at is not null"]
    args: list[object] = [tenant]

    def given(condition: str, *values: object) -> None:
        numbers = [f"${len(args) + n}" for n in range(1, len(values) + 1)]
        conditions.append(condition.format(*numbers))
        args.extend(values)

    if where.start is not None:
        given("checked_at >= {}::timestamptz", where.start)
    if where.end is not None:
        given("checked_at < {}::timestamptz", where.end)
    if where.campaign is not None:
        given("campaign_id = {}::text", where.campaign)
    if where.decision is not None:
        given("decision = {}::text", where.decision)
    if campaigns is not None:
        given("campaign_id = any({}::text[])", campaigns)
    if after is not None:
        given("(checked_at, ledger_id) > ({}::timestamptz, {}::text)", *after)
    query = (
        f"select {', '.join(COMPLIANCE_COLUMNS)} from compliance_ledger "
        f"where {' and '.join(conditions)} order by checked_at, ledger_id"
    )
    if limit is not None:
        query += f" limit {int(limit)}"
    return query, args
