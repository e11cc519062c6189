"""The world the read endpoints' tests run in, all real: the stats projector's read models
(its migrations applied, rows written by its ``Projection`` from events, with the store marks
its consumer keeps), the gateway's own schema (accounts, sessions, tokens, audit trail) and the
gateway's app from ``create_app`` with the read routers, where each test user logs in with
password and TOTP (or holds an API token) as a browser or a BI tool would.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from access_harness import BASE_URL, CHEAP, PASSWORD, Clock, login
from fastapi import FastAPI

from plateau_access_gateway.adapters.accounts import AccountsRepository
from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.credentials import Passwords, default_policy, totp_code
from plateau_access_gateway.adapters.read_models import ReadModels
from plateau_access_gateway.adapters.signing_keys import load_or_create
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.domain.signing import ExportSigner
from plateau_access_gateway.entrypoints.http import SESSION_COOKIE, create_app
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.entrypoints.http_read import read_routers
from plateau_access_gateway.entrypoints.http_stream import ChangeFeed
from plateau_access_gateway.handlers import AccessService
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import agents, calls, dialer, routing
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.consumer import StoreMark, apply_once
from plateau_runtime.db import Connection, connect, create_pool
from plateau_runtime.eventstore import EventStore
from plateau_runtime.services import service
from plateau_runtime.testing import MigratedSchema, as_stored, make_schema
from plateau_stats_projector.adapters.read_models import Projection


@dataclass(frozen=True)
class User:
    """A test user, logged in: the user's id and the credential each request carries (a
    session cookie, or an API token's bearer header)."""

    user_id: str
    headers: dict[str, str]


#: The last version of each stream recorded so far (stream ids carry a test's unique tag).
_VERSIONS: dict[str, int] = {}


def envelopes(tenant: str, timed: list[tuple[datetime, StreamedEvent]]) -> list[Envelope]:
    """Events as their producers would have stored them (each stream's versions go on)."""
    return as_stored(tenant, timed, _VERSIONS)


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


def source_store(envelope: Envelope) -> str:
    """The event store (service schema) a producer records such an event in."""
    if envelope.type.startswith(("agent.", "queue.", "wrap_up.")) or envelope.type == "call.queued":
        return "acd"
    if envelope.type.startswith(("contact_list.", "campaign.")):
        return "dialer"
    return "sip_gateway"


@dataclass
class World:
    """Everything a read-endpoint test needs."""

    stats: MigratedSchema
    access: MigratedSchema
    stats_pool: asyncpg.Pool  # the projector's role: writes read models
    access_pool: asyncpg.Pool  # the gateway's role: reads them, appends audit facts
    store: EventStore
    service: AccessService
    clock: Clock
    read_models: ReadModels
    signer: ExportSigner
    feed: ChangeFeed
    app: FastAPI
    home: Path
    users: dict[str, User] = field(default_factory=dict)
    #: The last store mark the projector's consumer recorded, per source store.
    marks: dict[str, StoreMark] = field(default_factory=dict)

    async def project(self, events: list[Envelope], *, notify: bool = False) -> None:
        """Apply events as the projector's consumer does (idempotent, one transaction each),
        each marked with its position and chain hash in its producer's store."""
        projection = Projection(notify=notify)
        async with self.stats_pool.acquire() as conn:
            for envelope in events:
                store = source_store(envelope)
                previous = self.marks.get(store)
                position = previous.position + 1 if previous else 1
                chained = (previous.chain_hash if previous else "") + str(envelope.event_id)
                mark = StoreMark(store, position, hashlib.sha256(chained.encode()).hexdigest())
                self.marks[store] = mark

                async def effect(c: Connection, e: Envelope = envelope) -> None:
                    await projection.apply(c, e)

                await apply_once(conn, "stats-projector", envelope, effect, mark)

    async def audit_facts(self, event_type: str) -> list[dict[str, object]]:
        rows = await self.access_pool.fetch(
            "select tenant, data from events where type = $1 order by position", event_type
        )
        return [{"tenant": r["tenant"], **r["data"]} for r in rows]

    def http(self, source: str = "198.51.100.7") -> httpx.AsyncClient:
        """A client of the app (no credential of its own)."""
        transport = httpx.ASGITransport(app=self.app, client=(source, 50000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    async def sign_in(
        self,
        name: str,
        tenant: str,
        *,
        role: Role = Role.CLIENT_ANALYST,
        queues: Sequence[str] = (),
        campaigns: Sequence[str] = (),
    ) -> User:
        """Create an account and log it in through the API (password, then TOTP enrolment
        and a code for a client user); the user, kept under ``name``."""
        account, _ = await self.service.create_user(
            tenant=tenant,
            username=f"{name}.{tenant}",
            role=role,
            password=PASSWORD,
            queue_ids=queues,
            campaign_ids=campaigns,
            created_by="test",
        )
        async with self.http() as http:
            started = await login(http, f"{name}.{tenant}")
            assert started.status_code == 200, started.text
            if started.json()["stage"] == "enrol_totp":
                csrf = {"x-csrf-token": started.json()["csrf_token"]}
                enrolment = await http.post("/api/v1/auth/totp/enrolment", headers=csrf)
                assert enrolment.status_code == 200, enrolment.text
                code = totp_code(enrolment.json()["secret"], self.clock())
                confirmed = await http.post(
                    "/api/v1/auth/totp/confirm", json={"code": code}, headers=csrf
                )
                assert confirmed.status_code == 200, confirmed.text
            cookie = http.cookies.get(SESSION_COOKIE)
            assert cookie, "the login set no session cookie"
            me = await http.get("/api/v1/me")
            assert me.status_code == 200, me.text
        user = User(account.user_id, {"cookie": f"{SESSION_COOKIE}={cookie}"})
        self.users[name] = user
        return user

    async def issue_token(self, name: str, of: str) -> User:
        """An API token of user ``of`` (created through the API), as user ``name``."""
        owner = self.users[of]
        async with self.http() as http:
            session = await http.get("/api/v1/auth/session", headers=owner.headers)
            csrf = {"x-csrf-token": session.json()["csrf_token"]}
            created = await http.post(
                "/api/v1/tokens",
                json={"name": f"BI tool of {of}", "days": 30},
                headers={**owner.headers, **csrf},
            )
            assert created.status_code == 201, created.text
        user = User(owner.user_id, {"authorization": f"Bearer {created.json()['token']}"})
        self.users[name] = user
        return user

    def client(self, who: str | None) -> httpx.AsyncClient:
        """A client of the app carrying user ``who``'s credential (None: anonymous)."""
        http = self.http()
        if who is not None:
            http.headers.update(self.users[who].headers)
        return http


async def build_world(
    admin_dsn: str, access: MigratedSchema, home: Path, heartbeat_s: float = 15.0
) -> AsyncIterator[World]:
    stats = await make_schema(admin_dsn, service("stats-projector").migrations_dir(), prefix="s")
    reader_role = f"{stats.service.role}_reader"
    admin = await connect(admin_dsn)
    try:
        # As migration 0050 grants the projector's reader role to the gateway's role in the
        # real deployment (the test schemas have random names, so their roles too).
        await admin.execute(f"grant {reader_role} to {access.service.role}")
    finally:
        await admin.close()
    stats_pool = await create_pool(stats.dsn, max_size=4)
    access_pool = await create_pool(access.dsn, max_size=8)
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    store = EventStore(access_pool, access.schema, clock=clock)
    audit = AuditTrail(store)
    service_ = AccessService(
        AccountsRepository(access_pool), audit, Passwords(CHEAP), default_policy(), clock=clock
    )
    read_models = ReadModels(access_pool, schema=stats.schema, reader_role=reader_role)
    signer = load_or_create(home / "export-signing-key.pem")
    feed = ChangeFeed(access.dsn)
    app = create_app(
        service_,
        routers=read_routers(read_models, audit, signer, feed, heartbeat_s=heartbeat_s),
        source_limiter=RateLimiter(10_000),
    )
    await feed.start()
    try:
        yield World(
            stats,
            access,
            stats_pool,
            access_pool,
            store,
            service_,
            clock,
            read_models,
            signer,
            feed,
            app,
            home,
        )
    finally:
        await feed.stop()
        await stats_pool.close()
        await access_pool.close()


def tag() -> str:
    return f"-{secrets.token_hex(3)}"
