"""Two gateway replicas sharing one schema, as a StatefulSet behind a dispatcher runs them:
sipp as the carrier and the agent over real sockets, ``CallControl`` over real gRPC, the
real PostgreSQL for call owners and shared registrations.

A carrier call lands on replica A, the agent registered on replica B; ``ConnectAgent`` and
``Hangup`` sent to B are forwarded to A, which rings the agent with the binding B holds.
A retried ``Originate`` on the other replica dials once. A restart closes only the
restarting replica's calls."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from sip_gateway_harness import (
    DNIS,
    TENANT,
    RunningGateway,
    agent_answers,
    carrier_hears_bye,
    carrier_refused,
    free_port,
    register,
    run_sipp,
    running_gateway,
    start_sipp,
    wait_until,
    write,
)

from plateau_contracts.events.calls import CallEnded, CallOffered, EndCause
from plateau_contracts.events.dialer import CampaignStarted, ContactAllowed
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_runtime.eventstore import EventStore, NewEvent
from plateau_runtime.testing import MigratedSchema
from plateau_sip_gateway.adapters.recorder import Recorder
from plateau_sip_gateway.domain.peers import binding_to_json
from plateau_sip_gateway.domain.registrar import Binding
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.entrypoints.call_control import FORWARDED_METADATA_KEY

pytestmark = pytest.mark.integration

EXTENSION = "1001"
PASSWORD = secrets.token_urlsafe(12)
ALLOWED = "+242066123456"
CAMPAIGN = "cmp-out"
METADATA = (("x-plateau-tenant", TENANT),)


def shared_trunks(customer_port: int) -> TrunksConfig:
    return TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "carrier",
                    "tenant": TENANT,
                    "source_networks": ["127.0.0.1/32"],
                    "outbound": [{"host": "127.0.0.1", "port": customer_port}],
                    "entry_points": {"+242053000100": "sales"},
                    "capacity": {"kind": "calls", "max_calls": 10},
                    "options_interval_s": 0,
                }
            ]
        }
    )


@pytest.fixture
def customer_port() -> int:
    return free_port()


@pytest.fixture
async def pair(
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    tmp_path: Path,
    customer_port: int,
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    """Replicas A and B over one schema (each with its own home directory)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = shared_trunks(customer_port)
    passwords = {EXTENSION: PASSWORD}
    schema = service_schema.schema
    async with (
        running_gateway(
            service_pool,
            tmp_path / "a",
            passwords=passwords,
            config=config,
            schema=schema,
            replica="gw-a",
        ) as a,
        running_gateway(
            service_pool,
            tmp_path / "b",
            passwords=passwords,
            config=config,
            schema=schema,
            replica="gw-b",
        ) as b,
    ):
        for running in (a, b):
            allowlist = running.gateway.allowlist
            allowlist.apply(
                CampaignStarted(campaign_id=CAMPAIGN, requested_by="supervisor"), TENANT
            )
            allowlist.apply(
                ContactAllowed(
                    contact_id="ct-1", campaign_id=CAMPAIGN, number=ALLOWED, list_version=3
                ),
                TENANT,
            )
        yield a, b


def calls_to(gw: RunningGateway) -> list[str]:
    """sipp arguments: one call to ``gw``'s DNIS."""
    return ["-s", DNIS, "-m", "1", gw.sip_target]


async def offered_on(gw: RunningGateway) -> str:
    async def offered() -> bool:
        return bool(await gw.offered_calls())

    await wait_until(offered, what="call.offered")
    return (await gw.offered_calls())[0]


async def test_connect_and_hangup_sent_to_the_other_replica_reach_the_call(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path
) -> None:
    a, b = pair
    agent_port = free_port()
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_answers()), "-m", "1"], tmp_path, port=agent_port
    )
    scenario = write(tmp_path, "register.xml", register(EXTENSION, PASSWORD, agent_port))
    code, output = await run_sipp(["-sf", scenario, "-m", "1", b.sip_target], tmp_path)
    assert code == 0, f"REGISTER on replica B failed:\n{output}"

    async def a_sees_the_binding() -> bool:
        assert a.gateway.bindings is not None
        return bool(a.gateway.bindings.lookup(EXTENSION, time.time()))

    await wait_until(a_sees_the_binding, what="replica A to mirror B's binding")
    assert a.gateway.registrar.registrar.lookup(EXTENSION, time.time()) == ()

    carrier = await start_sipp(
        ["-sf", write(tmp_path, "carrier.xml", carrier_hears_bye()), *calls_to(a)],
        tmp_path,
    )
    call_id = await offered_on(a)
    # Seen in the store, so its owner is recorded too (the facts wait for it).

    response = await b.connect_agent(call_id, EXTENSION)  # B does not hold it: forwarded
    assert response.agent_sip_call_id
    await a.wait_for(call_id, "call.connected")
    await b.hangup(call_id)

    code, output = await carrier.result()
    assert code == 0, f"carrier sipp failed:\n{output}"
    code, output = await agent.result()
    assert code == 0, f"agent sipp failed:\n{output}"
    await a.wait_for(call_id, "call.ended")
    events = await a.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]
    assert events[-1]["cause"] == "api_hangup"
    assert a.gateway.b2bua.open_calls == 0 and b.gateway.b2bua.open_calls == 0


async def test_the_owners_answer_is_passed_on_and_nothing_loops(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path, service_pool: asyncpg.Pool
) -> None:
    a, b = pair
    carrier = await start_sipp(
        ["-sf", write(tmp_path, "carrier.xml", carrier_refused(480, ringback=True)), *calls_to(a)],
        tmp_path,
    )
    call_id = await offered_on(a)
    # Seen in the store, so its owner is recorded too (the facts wait for it).

    # A waiting call cannot be held: the owner's FAILED_PRECONDITION comes back through B.
    with pytest.raises(grpc.aio.AioRpcError) as held:
        await b.stub.Hold(pb.HoldRequest(call_id=call_id), metadata=METADATA, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as direct:
        await a.stub.Hold(pb.HoldRequest(call_id=call_id), metadata=METADATA, timeout=10)
    assert held.value.code() == direct.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert held.value.details() == direct.value.details()

    # Already forwarded once: B answers for itself, never forwards again.
    with pytest.raises(grpc.aio.AioRpcError) as marked:
        await b.stub.Hangup(
            pb.HangupRequest(call_id=call_id),
            metadata=(*METADATA, (FORWARDED_METADATA_KEY, "gw-a")),
            timeout=10,
        )
    assert marked.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await b.stub.Hangup(pb.HangupRequest(call_id="no-such-call"), metadata=METADATA)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    gone = free_port()  # nobody listens there
    await service_pool.execute(
        "insert into call_owners (call_id, tenant, replica, address) values ($1, $2, $3, $4)",
        "held-by-a-dead-replica",
        TENANT,
        "gw-gone",
        f"127.0.0.1:{gone}",
    )
    with pytest.raises(grpc.aio.AioRpcError) as dead:
        await b.stub.Hangup(
            pb.HangupRequest(call_id="held-by-a-dead-replica"), metadata=METADATA, timeout=10
        )
    assert dead.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "gw-gone" in (dead.value.details() or "")

    await b.hangup(call_id)
    assert (await carrier.result())[0] == 0


def busy_customer() -> str:
    return """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customer busy">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="ACK"/>
</scenario>"""


async def test_an_originate_retried_on_the_other_replica_dials_once(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path, customer_port: int
) -> None:
    a, b = pair
    phone = await start_sipp(
        ["-sf", write(tmp_path, "customer.xml", busy_customer()), "-m", "1"],
        tmp_path,
        port=customer_port,
    )
    request = pb.OriginateRequest(
        request_id="att-retried",
        campaign_id=CAMPAIGN,
        contact_id="ct-1",
        attempt_id="att-retried",
        number=ALLOWED,
        requested_by=pb.REQUESTER_DIALER,
        requester="dialer",
    )
    # Sent to both at once (a retry racing the first try), then once more to B.
    first, second = await asyncio.gather(
        a.stub.Originate(request, metadata=METADATA, timeout=10),
        b.stub.Originate(request, metadata=METADATA, timeout=10),
    )
    again = await b.stub.Originate(request, metadata=METADATA, timeout=10)
    assert first.call_id == second.call_id == again.call_id

    code, output = await phone.result()
    assert code == 0, f"the customer's side failed:\n{output}"
    streams = {**await a.streams(), **await b.streams()}
    originated = [s for s, types in streams.items() if types[0] == "call.originated"]
    assert originated == [f"call-{first.call_id}"]


async def test_a_restart_closes_only_the_calls_that_replica_held(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    for call_id, owner in (("on-a", "gw-a"), ("on-b", "gw-b"), ("unowned", None)):
        offered = CallOffered(
            call_id=call_id,
            ani="+242066123456",
            dnis="+242053000100",
            trunk="carrier",
            sip_call_id=f"{call_id}@carrier",
        )
        await store.append(f"call-{call_id}", [NewEvent(offered, tenant=TENANT)], 0)
        if owner is not None:
            await service_pool.execute(
                "insert into call_owners (call_id, tenant, replica, address) "
                "values ($1, $2, $3, '127.0.0.1:1')",
                call_id,
                TENANT,
                owner,
            )
    async with running_gateway(
        service_pool, tmp_path, passwords={}, schema=service_schema.schema, replica="gw-a"
    ) as a:
        closed = {
            call_id: [e["type"] for e in await a.events(f"call-{call_id}")]
            for call_id in ("on-a", "on-b", "unowned")
        }
    assert closed == {
        "on-a": ["call.offered", "call.ended"],
        "on-b": ["call.offered"],  # replica B's call: B is still serving it
        "unowned": ["call.offered", "call.ended"],
    }


async def test_a_stopping_replica_removes_only_its_own_bindings(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path, service_pool: asyncpg.Pool
) -> None:
    a, b = pair
    for gw, port in ((a, free_port()), (b, free_port())):
        scenario = write(tmp_path, f"reg-{port}.xml", register(EXTENSION, PASSWORD, port))
        code, output = await run_sipp(["-sf", scenario, "-m", "1", gw.sip_target], tmp_path)
        assert code == 0, f"REGISTER failed:\n{output}"
    for gw in (a, b):
        assert gw.gateway.mirror is not None
        await gw.gateway.mirror.drain()
    rows = await service_pool.fetch("select replica from bindings order by replica")
    assert [r["replica"] for r in rows] == ["gw-a", "gw-b"]

    async def both_seen() -> bool:
        assert a.gateway.bindings is not None
        return len(a.gateway.bindings.lookup(EXTENSION, time.time())) == 2

    await wait_until(both_seen, what="replica A to see both bindings")
    assert b.gateway.mirror is not None
    await b.gateway.mirror.clear_own()  # what B's stop does

    async def only_a_left() -> bool:
        assert a.gateway.bindings is not None
        return len(a.gateway.bindings.lookup(EXTENSION, time.time())) == 1

    await wait_until(only_a_left, what="replica A to drop B's binding")
    rows = await service_pool.fetch("select replica from bindings")
    assert [r["replica"] for r in rows] == ["gw-a"]


async def test_a_calls_facts_wait_for_its_owner_to_be_recorded(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema
) -> None:
    store = EventStore(service_pool, service_schema.schema)
    recorder = Recorder(store)
    owner_recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    offered = CallOffered(
        call_id="gated", ani="+242066123456", dnis=DNIS, trunk="carrier", sip_call_id="g@c"
    )
    ended = CallEnded(call_id="gated", cause=EndCause.CALLER_HANGUP, ended_by="caller")
    recorder.record(TENANT, [offered], expected_version=0, after=owner_recorded)
    recorder.record(TENANT, [ended], expected_version=1)  # queued behind the first
    for _ in range(20):
        await asyncio.sleep(0)
    assert await store.read_stream("call-gated") == []
    owner_recorded.set_result(None)
    await recorder.drain()
    stored = await store.read_stream("call-gated")
    assert [s.envelope.type for s in stored] == ["call.offered", "call.ended"]
    assert recorder.failures == 0


async def test_a_replica_restarting_leaves_the_other_replicas_live_call_alone(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    schema = service_schema.schema
    async with running_gateway(
        service_pool, tmp_path / "b", passwords={}, schema=schema, replica="gw-b"
    ) as b:
        carrier = await start_sipp(
            [
                "-sf",
                write(tmp_path, "carrier.xml", carrier_refused(480, ringback=True)),
                *calls_to(b),
            ],
            tmp_path,
        )
        on_b = await offered_on(b)
        async with running_gateway(
            service_pool, tmp_path / "a", passwords={}, schema=schema, replica="gw-a"
        ):
            pass  # A starts (closing what it left open) and stops
        async with running_gateway(
            service_pool, tmp_path / "a", passwords={}, schema=schema, replica="gw-a"
        ) as a:
            assert await b.types_of(on_b) == ["call.offered"]
            await a.hangup(on_b)  # the restarted A forwards to B, which still holds it
            assert (await carrier.result())[0] == 0
            await b.wait_for(on_b, "call.ended")


async def test_a_binding_whose_notification_was_lost_is_found_by_the_resync(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> None:
    async with running_gateway(
        service_pool,
        tmp_path,
        passwords={},
        schema=service_schema.schema,
        replica="gw-a",
        resync_s=0.2,
    ) as a:
        now = time.time()
        silent = Binding("1002", "sip:1002@127.0.0.1:5999", now + 600, "c", 1, now)
        await service_pool.execute(  # written without NOTIFY, as if it had been lost
            "insert into bindings (replica, aor, contact, binding, expires_at) "
            "values ('gw-b', $1, $2, $3, $4)",
            silent.aor,
            silent.contact,
            binding_to_json(silent),
            silent.expires_at,
        )

        async def found() -> bool:
            assert a.gateway.bindings is not None
            return a.gateway.bindings.lookup("1002", time.time()) == (silent,)

        await wait_until(found, what="the resync to find the silent binding")


async def test_a_replica_listens_again_when_its_listening_connection_drops(
    pair: tuple[RunningGateway, RunningGateway], service_pool: asyncpg.Pool
) -> None:
    a, b = pair
    listeners = await service_pool.fetch(
        "select pid from pg_stat_activity where query like 'LISTEN %' and pid <> pg_backend_pid()"
    )
    assert len(listeners) == 2  # one per replica
    for row in listeners:
        await service_pool.execute("select pg_terminate_backend($1)", row["pid"])
    now = time.time()
    later = Binding("1003", "sip:1003@127.0.0.1:5998", now + 600, "c", 1, now)
    assert b.gateway.mirror is not None

    async def heard() -> bool:
        # Written again until heard: the first may go out before A listens again. The
        # resync (every 30 s here) is not what finds it within the wait.
        assert b.gateway.mirror is not None and a.gateway.bindings is not None
        b.gateway.mirror.changed("1003", (later,))
        await b.gateway.mirror.drain()
        return a.gateway.bindings.lookup("1003", time.time()) == (later,)

    await wait_until(heard, timeout=15, what="replica A to hear B's change again")
