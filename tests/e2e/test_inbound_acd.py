"""Inbound calls routed by the acd, end to end over real sockets: ``sipp`` as the carrier ->
the sip-gateway process -> the broker -> the acd process (``python -m plateau_acd``, its
event store in PostgreSQL, its consumer, ``CallControl.ConnectAgent`` over gRPC) -> real
``baresip`` softphones registered with digest authentication. Agents are driven through
the acd's ``AgentDesk`` gRPC API, the tenant is configured with ``python -m
plateau_acd.configure`` (what ``plateau config apply`` runs), and every assertion reads
the acd's own event store: decisions are facts.

* calls wait while every agent is busy and are served in order; skills pick the agent;
* a caller who hangs up while waiting is recorded as abandoned with the wait;
* ring-no-answer: the agent becomes not responding and the call goes back to the head;
* pause and resume; overflow to a second queue after the maximum wait (applied as a new
  configuration version while the acd runs);
* 20 calls waiting, ``kill -9`` of the acd, start again: every call routed, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from sip_peers import (
    CARRIER,
    DNIS,
    GatewayProcess,
    baresip_agent,
    free_port,
    gateway_process,
    sipp,
)

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as desk_grpc
from plateau_runtime.db import connect, create_pool
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.migrations import migrate, role_dsn
from plateau_runtime.services import service

pytestmark = pytest.mark.e2e

ACD = service("acd")

ABANDON = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller hangs up while queued">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:carrier@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=carrier 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <pause milliseconds="1500"/>
  <send><![CDATA[
CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-4]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <recv response="487"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-7]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
</scenario>
"""


def tenant_file(tenant: str, *, overflow: bool = False) -> str:
    """The tenant's configuration: q-main (French, skills-based) and q-spill (anyone)."""
    main: dict[str, Any] = {
        "id": "q-main",
        "name": "Customer service",
        "strategy": "skills_based",
        "required_skills": [{"name": "french"}],
        "ring_timeout_s": 4,
        "wrap_up_s": 1,
    }
    if overflow:
        main |= {"max_wait_s": 2, "overflow_queue": "q-spill"}
    agents = [
        ("a-1", "1001", [("french", 3)]),
        ("a-2", "1002", [("french", 9)]),
        ("a-3", "1003", [("lingala", 5)]),
        ("a-4", "1004", [("french", 1)]),
    ]
    config = {
        "tenants": [
            {
                "id": tenant,
                "name": "E2E operator",
                "pause_codes": ["break"],
                "queues": [main, {"id": "q-spill", "name": "Overflow", "wrap_up_s": 1}],
                "entry_points": [{"dnis": "+242053000100", "queue": "q-main"}],
                "agents": [
                    {
                        "id": agent_id,
                        "name": agent_id,
                        "extension": extension,
                        "skills": [{"name": n, "level": level} for n, level in skills],
                    }
                    for agent_id, extension, skills in agents
                ],
            }
        ]
    }
    return json.dumps(config)  # JSON is YAML


@dataclass
class AcdProcess:
    """``python -m plateau_acd`` as an operator starts it."""

    env: dict[str, str]
    log: Path
    grpc_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", ACD.package],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the acd exited {self.process.returncode}:\n{self.output()}")
            if '"service.ready"' in self.log.read_text(errors="replace").split("acd.killed")[-1]:
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"the acd was not ready within {timeout:.0f} s:\n{self.output()}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        with self.log.open("a") as out:
            out.write("acd.killed\n")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.asynccontextmanager
async def acd_process(
    admin_dsn: str, broker: EmbeddedBroker, workdir: Path, gateway: GatewayProcess
) -> AsyncIterator[AcdProcess]:
    """The acd on a free port, serving the gateway's tenant, configured by the acd's tool."""
    password = secrets.token_urlsafe(16)
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, ACD.service_schema(), password)
    finally:
        await admin.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update(
        PLATEAU_DATABASE_URL=role_dsn(admin_dsn, ACD.service_schema(), password),
        PLATEAU_KAFKA_BOOTSTRAP=broker.bootstrap,
        PLATEAU_CALL_CONTROL_TARGET=f"127.0.0.1:{gateway.grpc_port}",
        PLATEAU_ACD_TENANTS=gateway.tenant,
        PLATEAU_LOG_FORMAT="json",
        PLATEAU_LOG_LEVEL="info",
    )
    configure(env, workdir, tenant_file(gateway.tenant), "tenant.yaml")
    port = free_port(socket.SOCK_STREAM)
    acd = AcdProcess({**env, "PLATEAU_GRPC_PORT": str(port)}, workdir / "acd.log", port)
    acd.start()
    try:
        await acd.wait_ready()
        yield acd
    finally:
        acd.stop()


def configure(env: dict[str, str], workdir: Path, text: str, name: str) -> str:
    """Apply a configuration file with the acd's tool; its output."""
    path = workdir / name
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", f"{ACD.package}.configure", "apply", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Facts:
    """The acd's recorded decisions of one tenant, read from its event store."""

    def __init__(self, pool: asyncpg.Pool, tenant: str) -> None:
        self.pool = pool
        self.tenant = tenant

    async def all(self, kind: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"select data from {ACD.schema}.events where tenant = $1 and type = $2 "
            "order by position",
            self.tenant,
            kind,
        )
        return [dict(row["data"]) for row in rows]

    async def count(self, kind: str) -> int:
        return len(await self.all(kind))


@contextlib.asynccontextmanager
async def admin_pool(admin_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(admin_dsn, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def registered(pool: asyncpg.Pool, tenant: str, extensions: list[str]) -> bool:
    rows = await pool.fetch(
        "select distinct stream from sip_gateway.events where tenant = $1 and "
        "type = 'extension.registered'",
        tenant,
    )
    return {f"extension-{e}" for e in extensions} <= {row["stream"] for row in rows}


async def eventually(check: Any, what: str, timeout: float = 60.0) -> None:
    """Wait for an async ``check()`` to hold; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


class Desk:
    """An agent desktop: the acd's ``AgentDesk`` for the tenant."""

    def __init__(self, channel: grpc.aio.Channel, tenant: str) -> None:
        self.stub = desk_grpc.AgentDeskStub(channel)
        self.metadata = (("x-plateau-tenant", tenant),)

    async def login(self, *agent_ids: str) -> None:
        for agent_id in agent_ids:
            status = await self.stub.Login(
                desk.LoginRequest(agent_id=agent_id), metadata=self.metadata
            )
            assert status.state == desk.AGENT_STATE_UNAVAILABLE

    async def available(self, *agent_ids: str) -> None:
        for agent_id in agent_ids:
            status = await self.stub.SetAvailable(
                desk.SetAvailableRequest(agent_id=agent_id), metadata=self.metadata
            )
            # A waiting call is reserved for the agent at once.
            assert status.state in (desk.AGENT_STATE_AVAILABLE, desk.AGENT_STATE_RESERVED)

    async def pause(self, *agent_ids: str) -> None:
        for agent_id in agent_ids:
            status = await self.stub.Pause(
                desk.PauseRequest(agent_id=agent_id, code="break"), metadata=self.metadata
            )
            assert (status.state, status.pause_code) == (desk.AGENT_STATE_PAUSED, "break")


@contextlib.contextmanager
def agents(workdir: Path, gateway: GatewayProcess, passwords: dict[str, str]) -> Iterator[None]:
    """A baresip per extension; 1004 never answers (it rings until cancelled)."""
    with contextlib.ExitStack() as stack:
        for extension, password in passwords.items():
            answermode = "manual" if extension == "1004" else "auto"
            stack.enter_context(
                baresip_agent(workdir, gateway.sip_port, password, extension, answermode)
            )
        yield


async def carrier(
    workdir: Path, gateway: GatewayProcess, calls: int, *, rate: float = 1, talk_ms: int = 500
) -> tuple[int, str]:
    """sipp as the carrier: ``calls`` calls to the entry point; its status and output."""
    scenario = workdir / f"carrier-{talk_ms}.xml"
    scenario.write_text(CARRIER.replace("{talk_ms}", str(talk_ms)))
    return await sipp(
        [
            "-sf",
            str(scenario),
            "-s",
            DNIS,
            "-m",
            str(calls),
            "-r",
            str(rate),
            "-l",
            str(calls),
            f"127.0.0.1:{gateway.sip_port}",
            "-p",
            str(free_port()),
        ],
        workdir,
    )


def per_call(facts: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(f["call_id"]) for f in facts)


async def test_inbound_calls_are_queued_routed_and_recovered_by_the_acd(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    passwords = {str(n): secrets.token_urlsafe(12) for n in range(1001, 1005)}
    async with (
        gateway_process(admin_dsn, broker, tmp_path, passwords) as gateway,
        acd_process(admin_dsn, broker, tmp_path, gateway) as acd,
        admin_pool(admin_dsn) as pool,
        grpc.aio.insecure_channel(f"127.0.0.1:{acd.grpc_port}") as channel,
    ):
        facts = Facts(pool, gateway.tenant)
        agent_desk = Desk(channel, gateway.tenant)
        with agents(tmp_path, gateway, passwords):
            await eventually(
                lambda: registered(pool, gateway.tenant, list(passwords)),
                "the softphones' registrations",
            )
            await agent_desk.login("a-1", "a-2", "a-3", "a-4")

            # 1. Two French agents, four calls a second apart:
            # calls 3 and 4 wait with ringback while both agents are busy, then are served
            # in the order they arrived (three seconds of talk, one of wrap-up). The first
            # call goes to the better French speaker.
            await agent_desk.available("a-1", "a-2")
            code, output = await carrier(tmp_path, gateway, 4, rate=1, talk_ms=3000)
            assert code == 0, f"sipp:\n{output}\n{gateway.output()}\n{acd.output()}"
            await eventually(lambda: has(facts, "call.answered", 4), "4 answers")
            queued = [f["call_id"] for f in await facts.all("call.queued")]
            answered = await facts.all("call.answered")
            assert max(f["waited_ms"] for f in answered) > 1000  # some waited for an agent
            reserved = await facts.all("call.agent_reserved")
            # Served in arrival order: each reserved once, in the order they were queued.
            assert [f["call_id"] for f in reserved] == queued
            assert reserved[0]["agent_id"] == "a-2"  # french 9 beats french 3
            assert [c["agent_id"] for c in reserved[0]["candidates"]] == ["a-2", "a-1"]

            # 2. Pause (once the wrap-ups are over): nobody takes calls; a caller who hangs
            # up is an abandon.
            await eventually(lambda: has(facts, "agent.wrap_up_completed", 4), "4 wrap-ups")
            await agent_desk.pause("a-1", "a-2")
            scenario = tmp_path / "abandon.xml"
            scenario.write_text(ABANDON)
            code, output = await sipp(
                [
                    "-sf",
                    str(scenario),
                    "-s",
                    DNIS,
                    "-m",
                    "1",
                    f"127.0.0.1:{gateway.sip_port}",
                    "-p",
                    str(free_port()),
                ],
                tmp_path,
            )
            assert code == 0, f"sipp:\n{output}\n{gateway.output()}"
            await eventually(lambda: has(facts, "call.abandoned", 1), "the abandon")
            [abandon] = await facts.all("call.abandoned")
            assert abandon["queue_id"] == "q-main" and abandon["agent_id"] is None
            assert abandon["waited_ms"] >= 1000

            # 3. Ring-no-answer: a-4's softphone rings out; a-4 is not responding and the
            # call goes back to the head of the queue, then to a-1 once resumed.
            await agent_desk.available("a-4")
            sipp_call = asyncio.create_task(carrier(tmp_path, gateway, 1, talk_ms=500))
            await eventually(lambda: has(facts, "agent.not_responding", 1), "RONA", 90)
            await agent_desk.available("a-1")
            code, output = await sipp_call
            assert code == 0, f"sipp:\n{output}\n{gateway.output()}\n{acd.output()}"
            [requeued] = await facts.all("call.requeued")
            assert (requeued["agent_id"], requeued["reason"]) == ("a-4", "ring_no_answer")
            [not_responding] = await facts.all("agent.not_responding")
            assert not_responding["reason"] == "ring_no_answer"
            await eventually(lambda: has(facts, "call.answered", 5), "the RONA call answered")
            assert (await facts.all("call.answered"))[-1]["agent_id"] == "a-1"
            await eventually(lambda: has(facts, "agent.wrap_up_completed", 5), "a-1's wrap-up")

            # 4. Overflow, configured while the acd runs: q-main keeps a call 2 s at most,
            # then q-spill takes it; only a-3 (no French) is available, in q-spill.
            configure(acd.env, tmp_path, tenant_file(gateway.tenant, overflow=True), "v2.yaml")
            await agent_desk.pause("a-1")
            await agent_desk.available("a-3")
            code, output = await carrier(tmp_path, gateway, 1, talk_ms=500)
            assert code == 0, f"sipp:\n{output}\n{gateway.output()}\n{acd.output()}"
            [overflow] = await facts.all("call.overflowed")
            assert (overflow["queue_id"], overflow["to_queue_id"]) == ("q-main", "q-spill")
            await eventually(lambda: has(facts, "call.answered", 6), "the overflowed answer")
            last = (await facts.all("call.answered"))[-1]
            assert (last["queue_id"], last["agent_id"]) == ("q-spill", "a-3")


async def has(facts: Facts, kind: str, count: int) -> bool:
    return await facts.count(kind) >= count


async def test_twenty_waiting_calls_survive_kill_9_of_the_acd(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    passwords = {str(n): secrets.token_urlsafe(12) for n in range(1001, 1004)}
    calls = 20
    async with (
        gateway_process(admin_dsn, broker, tmp_path, passwords) as gateway,
        acd_process(admin_dsn, broker, tmp_path, gateway) as acd,
        admin_pool(admin_dsn) as pool,
    ):
        facts = Facts(pool, gateway.tenant)
        with agents(tmp_path, gateway, passwords):
            await eventually(
                lambda: registered(pool, gateway.tenant, list(passwords)),
                "the softphones' registrations",
            )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{acd.grpc_port}") as channel:
                await Desk(channel, gateway.tenant).login("a-1", "a-2", "a-3")
            # Nobody is available: all 20 calls wait (with ringback) in q-main.
            sipp_calls = asyncio.create_task(
                carrier(tmp_path, gateway, calls, rate=20, talk_ms=300)
            )
            await eventually(lambda: has(facts, "call.queued", calls), f"{calls} calls queued")
            acd.kill9()
            acd.start()
            await acd.wait_ready()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{acd.grpc_port}") as channel:
                await Desk(channel, gateway.tenant).available("a-1", "a-2", "a-3")
            code, output = await sipp_calls
            assert code == 0, f"sipp:\n{output}\n{gateway.output()}\n{acd.output()}"
            await eventually(lambda: has(facts, "call.answered", calls), f"{calls} answers")
            queued = await facts.all("call.queued")
            answered = await facts.all("call.answered")
            reserved = await facts.all("call.agent_reserved")
            assert len(queued) == calls  # redelivered offers were not queued again
            assert set(per_call(answered).values()) == {1}
            assert per_call(reserved) == per_call(answered)  # reserved once, answered once
            assert [f["call_id"] for f in reserved] == [f["call_id"] for f in queued]
