"""Tenant isolation is enforced by PostgreSQL: a session of the reader role (the one the
access gateway uses) sees only the tenant it set, even in a query with no WHERE clause, and
nothing at all before it sets one; it can change nothing."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from plateau_contracts.envelope import Envelope
from plateau_contracts.events import agents, calls, dialer, routing
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.consumer import apply_once
from plateau_runtime.db import Connection, connect
from plateau_runtime.testing import MigratedSchema, as_stored
from plateau_stats_projector.adapters.read_models import Projection

pytestmark = pytest.mark.integration

TABLES = (
    "tenant_settings",
    "call_facts",
    "call_contributions",
    "intervals",
    "rollups",
    "call_records",
    "queue_waiting",
    "agent_status",
    "agent_state_spans",
    "queue_settings",
    "campaign_status",
    "campaign_dialled_contacts",
    "compliance_ledger",
)
VIEWS = (
    "interval_measures",
    "rollup_measures",
    "queue_live",
    "queue_today",
    "campaign_today",
    "campaign_last_30_days",
    "agent_live",
    "queue_agents_by_state",
    "queue_today_metrics",
    "agent_today_metrics",
)


def traffic(tenant: str, tag: str) -> list[Envelope]:
    """A little of everything for one tenant: a queue, an agent, a handled and a waiting call."""
    # Early in the tenant's local today, so that "today" views see it.
    local = datetime.now(ZoneInfo("Africa/Brazzaville"))
    start = local.replace(hour=0, minute=1, second=0, microsecond=0).astimezone(UTC)
    events: list[tuple[int, StreamedEvent]] = [
        (
            0,
            routing.QueueConfigured(
                queue_id=f"q{tag}",
                name="Support",
                strategy="longest_idle",
                ring_timeout_s=15,
                service_level_threshold_s=20,
                service_level_target=0.8,
            ),
        ),
        (1, agents.AgentLoggedIn(agent_id=f"a{tag}", extension="1001")),
        (2, agents.AgentBecameAvailable(agent_id=f"a{tag}")),
        (
            10,
            routing.CallQueued(
                queue_id=f"q{tag}", call_id=f"c1{tag}", direction="inbound", priority=0
            ),
        ),
        (
            15,
            calls.CallConnected(
                call_id=f"c1{tag}", agent_id=f"a{tag}", extension="1001", queue_id=f"q{tag}"
            ),
        ),
        (16, agents.AgentBecameBusy(agent_id=f"a{tag}", call_id=f"c1{tag}", direction="inbound")),
        (
            70,
            calls.CallEnded(
                call_id=f"c1{tag}",
                cause=calls.EndCause.CALLER_HANGUP,
                ended_by=calls.EndedBy.CALLER,
            ),
        ),
        (70, agents.WrapUpStarted(agent_id=f"a{tag}", call_id=f"c1{tag}")),
        (80, agents.WrapUpCompleted(agent_id=f"a{tag}", call_id=f"c1{tag}", completed_by="agent")),
        (80, agents.AgentBecameAvailable(agent_id=f"a{tag}")),
        (
            90,
            routing.CallQueued(
                queue_id=f"q{tag}", call_id=f"c2{tag}", direction="inbound", priority=0
            ),
        ),
    ]
    events.append(
        (
            95,
            calls.CallOriginated(
                call_id=f"o1{tag}",
                campaign_id=f"cmp{tag}",
                contact_id="ct-1",
                attempt_id="at-1",
                number="+242066000009",
                list_version=1,
                trunk="mno",
                requested_by=calls.DialRequester.DIALER,
                sip_call_id="sip-o1",
            ),
        )
    )
    events.append(
        (
            96,
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
    events.append(
        (
            97,
            dialer.DialAttempted(
                contact_id=f"ct{tag}",
                campaign_id=f"cmp{tag}",
                attempt_id="at-1",
                attempt_number=1,
                number="+242066000009",
                list_version=1,
                dial_level=1.5,
            ),
        )
    )
    return as_stored(tenant, [(start + timedelta(seconds=s), e) for s, e in events])


async def project(pool: asyncpg.Pool, envelopes: list[Envelope]) -> None:
    projection = Projection(notify=False)
    async with pool.acquire() as conn:
        for envelope in envelopes:

            async def effect(c: Connection, e: Envelope = envelope) -> None:
                await projection.apply(c, e)

            await apply_once(conn, "stats-projector", envelope, effect)
        await conn.execute(
            "insert into tenant_settings (tenant, time_zone) values ($1, 'Africa/Brazzaville')",
            envelopes[0].tenant,
        )


async def reader_session(admin_dsn: str, schema: MigratedSchema) -> asyncpg.Connection:
    """A login role granted the reader role, as the access gateway's role would be."""
    login, password = f"reader_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    admin = await connect(admin_dsn)
    try:
        await admin.execute(f"create role {login} login password '{password}'")
        await admin.execute(f"grant {schema.service.role}_reader to {login}")
    finally:
        await admin.close()
    dsn = schema.dsn.replace(f"{schema.service.role}:", f"{login}:", 1)
    dsn = dsn.split("@", 1)
    conn = await connect(f"postgresql://{login}:{password}@{dsn[1]}")
    await conn.execute(f"set search_path = {schema.schema}")
    return conn


async def test_the_reader_sees_only_its_sessions_tenant_even_without_a_where_clause(
    admin_dsn: str, service_schema: MigratedSchema, service_pool: asyncpg.Pool
) -> None:
    tag = f"-{secrets.token_hex(3)}"
    mine, theirs = f"mine{tag}", f"theirs{tag}"
    # Stream ids are unique across tenants (a consumer keeps one checkpoint per stream).
    await project(service_pool, traffic(mine, f"{tag}-m"))
    await project(service_pool, traffic(theirs, f"{tag}-t"))
    for table in TABLES:  # both tenants have rows in every table
        tenants = await service_pool.fetchval(f"select count(distinct tenant) from {table}")
        assert tenants == 2, table

    reader = await reader_session(admin_dsn, service_schema)
    try:
        for relation in TABLES + VIEWS:
            assert await reader.fetchval(f"select count(*) from {relation}") == 0, relation
        async with reader.transaction():
            await reader.execute("select set_config('plateau.tenant', $1, true)", mine)
            for relation in TABLES + VIEWS:
                rows = await reader.fetch(f"select tenant from {relation}")
                assert rows, f"{relation} shows nothing of the session's tenant"
                assert {r["tenant"] for r in rows} == {mine}, relation
            waiting = await reader.fetchrow("select * from queue_live")
            assert waiting is not None and waiting["calls_waiting"] == 1
            today = await reader.fetchval("select measures from queue_today")
            assert today["offered"] == 2 and today["answered"] == 1 and today["handled"] == 1
            figures = await reader.fetchrow("select * from queue_today_metrics")
            assert figures is not None
            # One call answered after 5 s (within 20 s), one still waiting: 1 of 1.
            assert (figures["service_level"], figures["asa_ms"]) == (1, 5000)
            occupancy = await reader.fetchval("select occupancy from agent_today_metrics")
            # Available, then on the call, then in wrap-up: busy part of the time only.
            assert occupancy is not None and 0 < occupancy < 1
            handled = await reader.fetchval("select handled_today from agent_live")
            assert handled == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("delete from intervals")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("select * from consumer_checkpoints")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("select * from events")
    finally:
        await reader.close()
