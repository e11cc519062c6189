"""The world the read endpoints' tests run in: the stats projector's real read models (its
migrations applied, rows written by its ``Projection`` from real events), the gateway's own
schema (its migrations, its audit trail) and a FastAPI app of the read routers.

Two pieces stand in for work landing in parallel and are to be deleted at merge:

* ``STAND_IN_REPORT_FUNCTIONS`` — the stats projector's ``report_intervals`` and
  ``report_provenance`` (branch ``stats``), with the agreed signatures;
* ``StandInAuthentication`` — sets ``request.state.principal`` from a test header, in place of
  the authentication layer (branch ``access-core``).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import FastAPI, Request, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.read_models import ReadModels
from plateau_access_gateway.adapters.signing_keys import load_or_create
from plateau_access_gateway.domain.principal import Principal, Role, Via
from plateau_access_gateway.domain.signing import ExportSigner
from plateau_access_gateway.entrypoints.http_principal import API_PREFIX
from plateau_access_gateway.entrypoints.http_read import read_routers
from plateau_access_gateway.entrypoints.http_stream import ChangeFeed
from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events import agents, calls, dialer, routing
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.consumer import apply_once
from plateau_runtime.db import Connection, connect, create_pool
from plateau_runtime.eventstore import EventStore
from plateau_runtime.services import service
from plateau_runtime.testing import MigratedSchema, make_schema
from plateau_stats_projector.adapters.read_models import Projection

# STAND-IN, delete at merge: the stats projector's reader functions (branch `stats`).
STAND_IN_REPORT_FUNCTIONS = """
create function report_intervals(
    p_dimension text, p_ids text[], p_from timestamptz, p_to timestamptz, p_granularity text
) returns table(dimension text, dimension_id text, period_start timestamptz, measures jsonb)
language sql stable as $$
    select m.dimension, m.dimension_id, m.interval_start, jsonb_object_agg(m.measure, m.value)
    from interval_measures m
    where p_granularity = '15min' and m.dimension = p_dimension
      and (p_ids is null or m.dimension_id = any(p_ids))
      and m.interval_start >= p_from and m.interval_start < p_to
    group by 1, 2, 3
    union all
    select r.dimension, r.dimension_id, r.period_start, jsonb_object_agg(r.measure, r.value)
    from rollup_measures r
    where r.grain = p_granularity and r.dimension = p_dimension
      and (p_ids is null or r.dimension_id = any(p_ids))
      and r.period_start >= p_from and r.period_start < p_to
    group by 1, 2, 3
$$;
create function report_provenance()
returns table(source text, "position" bigint, chain_head text, applied_at timestamptz)
language sql stable as $$
    select s, 42::bigint, repeat('ab', 32), timestamptz '2026-05-04 12:00Z'
    from unnest(array['acd', 'sip-gateway']) s
$$;
"""

PRINCIPAL_HEADER = "x-test-principal"


class StandInAuthentication(BaseHTTPMiddleware):
    """STAND-IN for the authentication layer (branch `access-core`), delete at merge: the
    principal is picked by name from a test header."""

    def __init__(self, app: object, principals: dict[str, Principal]) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self._principals = principals

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        name = request.headers.get(PRINCIPAL_HEADER)
        if name in self._principals:
            request.state.principal = self._principals[name]
        return await call_next(request)


def principal(
    tenant: str,
    name: str = "analyst",
    queues: Iterable[str] | None = None,
    campaigns: Iterable[str] | None = None,
) -> Principal:
    return Principal(
        tenant=tenant,
        user_id=f"u-{name}-{tenant}",
        username=name,
        role=Role.CLIENT_ANALYST,
        via=Via.SESSION,
        credential_id=f"s-{name}-{tenant}",
        queue_scope=None if queues is None else frozenset(queues),
        campaign_scope=None if campaigns is None else frozenset(campaigns),
    )


#: The last version of each stream recorded so far (stream ids carry a test's unique tag).
_VERSIONS: dict[str, int] = {}


def envelopes(tenant: str, timed: list[tuple[datetime, StreamedEvent]]) -> list[Envelope]:
    """Events as their producers would have stored them (each stream's versions go on)."""
    versions = _VERSIONS
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


def today_start() -> datetime:
    """A minute past the tenants' local midnight, today, so "today" views see the traffic."""
    local = datetime.now(ZoneInfo("Africa/Brazzaville"))
    return local.replace(hour=0, minute=1, second=0, microsecond=0).astimezone(UTC)


def handled_call(
    queue: str, agent: str, call: str, at: datetime
) -> list[tuple[datetime, StreamedEvent]]:
    """A call queued, answered 5 s later, talked 55 s and wrapped up 10 s."""
    s = timedelta(seconds=1)
    return [
        (at, routing.CallQueued(queue_id=queue, call_id=call, direction="inbound", priority=0)),
        (
            at + 5 * s,
            calls.CallConnected(call_id=call, agent_id=agent, extension="1001", queue_id=queue),
        ),
        (at + 6 * s, agents.AgentBecameBusy(agent_id=agent, call_id=call, direction="inbound")),
        (
            at + 60 * s,
            calls.CallEnded(
                call_id=call, cause=calls.EndCause.CALLER_HANGUP, ended_by=calls.EndedBy.CALLER
            ),
        ),
        (at + 60 * s, agents.WrapUpStarted(agent_id=agent, call_id=call)),
        (
            at + 70 * s,
            agents.WrapUpCompleted(agent_id=agent, call_id=call, completed_by="agent"),
        ),
        (at + 70 * s, agents.AgentBecameAvailable(agent_id=agent)),
    ]


def tenant_traffic(tenant: str, tag: str) -> list[Envelope]:
    """For one tenant: two queues, an agent per queue, handled calls, a waiting call, a campaign."""
    start = today_start()
    s = timedelta(seconds=1)
    timed: list[tuple[datetime, StreamedEvent]] = []
    for n, queue in enumerate((f"q1{tag}", f"q2{tag}")):
        timed.append(
            (
                start,
                routing.QueueConfigured(
                    queue_id=queue,
                    name=f"Queue {n + 1}",
                    strategy="longest_idle",
                    ring_timeout_s=15,
                    service_level_threshold_s=20,
                    service_level_target=0.8,
                ),
            )
        )
    for n in (1, 2):
        agent = f"a{n}{tag}"
        timed.append((start + s, agents.AgentLoggedIn(agent_id=agent, extension=f"100{n}")))
        timed.append((start + 2 * s, agents.AgentBecameAvailable(agent_id=agent)))
    timed += handled_call(f"q1{tag}", f"a1{tag}", f"c1{tag}", start + 10 * s)
    timed += handled_call(f"q2{tag}", f"a2{tag}", f"c2{tag}", start + 20 * s)
    timed += handled_call(f"q1{tag}", f"a1{tag}", f"c3{tag}", start + 100 * s)
    timed.append(
        (
            start + 200 * s,
            routing.CallQueued(
                queue_id=f"q1{tag}", call_id=f"c4{tag}", direction="inbound", priority=0
            ),
        )
    )
    timed.append(
        (
            start + 210 * s,
            calls.CallOriginated(
                call_id=f"o1{tag}",
                campaign_id=f"cmp{tag}",
                contact_id=f"ct{tag}",
                attempt_id="at-1",
                number="+242066000009",
                list_version=1,
                trunk="mno",
                requested_by=calls.DialRequester.DIALER,
                sip_call_id=f"sip-o1{tag}",
            ),
        )
    )
    timed.append(
        (
            start + 211 * s,
            dialer.ContactListImported(
                campaign_id=f"cmp{tag}",
                list_version=1,
                filename="clients.csv",
                sha256="0" * 64,
                encoding="utf-8",
                delimiter=";",
                rows_total=10,
                rows_accepted=10,
                rows_rejected=0,
                rows_duplicate=0,
                imported_by="u-1",
            ),
        )
    )
    timed.sort(key=lambda item: item[0])
    return envelopes(tenant, timed)


@dataclass
class World:
    """Everything a read-endpoint test needs."""

    stats: MigratedSchema
    access: MigratedSchema
    stats_pool: asyncpg.Pool  # the projector's role: writes read models
    access_pool: asyncpg.Pool  # the gateway's role: reads them, appends audit facts
    store: EventStore
    read_models: ReadModels
    signer: ExportSigner
    feed: ChangeFeed
    app: FastAPI
    principals: dict[str, Principal]
    home: Path

    async def project(self, events: list[Envelope], *, notify: bool = False) -> None:
        """Apply events as the projector's consumer does (idempotent, one transaction each)."""
        projection = Projection(notify=notify)
        async with self.stats_pool.acquire() as conn:
            for envelope in events:

                async def effect(c: Connection, e: Envelope = envelope) -> None:
                    await projection.apply(c, e)

                await apply_once(conn, "stats-projector", envelope, effect)

    async def audit_facts(self, event_type: str) -> list[dict[str, object]]:
        rows = await self.access_pool.fetch(
            "select tenant, data from events where type = $1 order by position", event_type
        )
        return [{"tenant": r["tenant"], **r["data"]} for r in rows]


async def build_world(
    admin_dsn: str, access: MigratedSchema, home: Path, heartbeat_s: float = 15.0
) -> AsyncIterator[World]:
    stats = await make_schema(admin_dsn, service("stats-projector").migrations_dir(), prefix="s")
    reader_role = f"{stats.service.role}_reader"
    admin = await connect(admin_dsn)
    try:
        await admin.execute(f"set search_path = {stats.schema}")
        await admin.execute(STAND_IN_REPORT_FUNCTIONS)
        # As migration 0050 grants the projector's reader role to the gateway's role in the
        # real deployment (the test schemas have random names, so their roles too).
        await admin.execute(f"grant {reader_role} to {access.service.role}")
    finally:
        await admin.close()
    stats_pool = await create_pool(stats.dsn, max_size=4)
    access_pool = await create_pool(access.dsn, max_size=8)
    store = EventStore(access_pool, access.schema)
    read_models = ReadModels(access_pool, schema=stats.schema, reader_role=reader_role)
    signer = load_or_create(home / "export-signing-key.pem")
    audit = AuditTrail(store)
    feed = ChangeFeed(access.dsn)
    principals: dict[str, Principal] = {}
    app = FastAPI()
    for router in read_routers(read_models, audit, signer, feed, heartbeat_s=heartbeat_s):
        app.include_router(router, prefix=API_PREFIX)
    app.add_middleware(StandInAuthentication, principals=principals)
    await feed.start()
    try:
        yield World(
            stats,
            access,
            stats_pool,
            access_pool,
            store,
            read_models,
            signer,
            feed,
            app,
            principals,
            home,
        )
    finally:
        await feed.stop()
        await stats_pool.close()
        await access_pool.close()


def tag() -> str:
    return f"-{secrets.token_hex(3)}"
