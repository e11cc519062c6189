"""Inbound calls end to end: ``sipp`` as the carrier -> the sip-gateway process (``python -m
plateau_sip_gateway``, its event store and outbox relay) -> a test driver that consumes
``call.offered`` from the real broker and calls ``CallControl.ConnectAgent`` -> a real
``baresip`` softphone registered with digest auth and answering automatically.

Every call must complete, and each call's events must arrive on ``plateau.calls`` in
order: offered, agent_ringing, connected, ended. The same then with ``sipp`` agents at
50 calls/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from sip_peers import (
    CARRIER,
    DNIS,
    REGISTER,
    baresip_agent,
    free_port,
    gateway_process,
    sipp,
    tool,
    wait_for,
)

from plateau_contracts.envelope import Envelope
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.bus import ensure_topics
from plateau_runtime.embedded import EmbeddedBroker

pytestmark = pytest.mark.e2e

EXTENSION = "1001"
EXPECTED = ["call.offered", "call.agent_ringing", "call.connected", "call.ended"]


@dataclass
class Driver:
    """The acd's stand-in: on each ``call.offered`` of the tenant, ConnectAgent."""

    bootstrap: str
    tenant: str
    grpc_port: int
    extension: str
    streams: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.bootstrap, ["plateau.calls"])
        consumer = AIOKafkaConsumer(
            "plateau.calls",
            bootstrap_servers=self.bootstrap,
            group_id=f"driver-{secrets.token_hex(4)}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                stub = pb_grpc.CallControlStub(channel)
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=100, max_records=500)
                    for records in batch.values():
                        for record in records:
                            envelope = Envelope.from_message(record.value)
                            if envelope.tenant != self.tenant:
                                continue
                            seen = self.streams.setdefault(envelope.stream, [])
                            if any(v == envelope.stream_version for v, _ in seen):
                                continue  # at-least-once: a redelivery
                            seen.append((envelope.stream_version, envelope.type))
                            if envelope.type == "call.offered":
                                await self._connect(stub, envelope)
        finally:
            await consumer.stop()

    async def _connect(self, stub: pb_grpc.CallControlStub, envelope: Envelope) -> None:
        call_id = str(envelope.data["call_id"])
        request = pb.ConnectAgentRequest(
            request_id=str(envelope.event_id),
            call_id=call_id,
            agent_id="a-1001",
            extension=self.extension,
            queue_id="q-sales",
        )
        request.ring_timeout.FromSeconds(10)
        try:
            await stub.ConnectAgent(
                request, metadata=(("x-plateau-tenant", self.tenant),), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"{call_id}: {exc.code().name} {exc.details()}")

    def ended(self) -> int:
        return sum(1 for types in self.streams.values() if types and types[-1][1] == "call.ended")

    def out_of_order(self) -> dict[str, list[str]]:
        """Calls whose events did not arrive as offered, ringing, connected, ended."""
        return {
            stream: [t for _, t in seen]
            for stream, seen in self.streams.items()
            if stream.startswith("call-")
            and ([t for _, t in seen] != EXPECTED or [v for v, _ in seen] != [1, 2, 3, 4])
        }


@contextlib.asynccontextmanager
async def driving(driver: Driver) -> AsyncIterator[Driver]:
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(stop))
    try:
        yield driver
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def test_100_calls_reach_a_baresip_agent_in_order(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    calls = 100
    async with gateway_process(admin_dsn, broker, tmp_path, {EXTENSION: password}) as gateway:
        with baresip_agent(tmp_path, gateway.sip_port, password):
            driver = Driver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
            async with driving(driver):
                await wait_for(
                    lambda: f"extension-{EXTENSION}" in driver.streams,
                    30,
                    "baresip's registration on the bus",
                )
                scenario = tmp_path / "carrier.xml"
                scenario.write_text(CARRIER.replace("{talk_ms}", "200"))
                started = time.monotonic()
                code, output = await sipp(
                    [
                        "-sf",
                        str(scenario),
                        "-s",
                        DNIS,
                        "-m",
                        str(calls),
                        "-r",
                        "10",
                        "-l",
                        "1",
                        f"127.0.0.1:{gateway.sip_port}",
                        "-p",
                        str(free_port()),
                    ],
                    tmp_path,
                )
                seconds = time.monotonic() - started
                assert code == 0, f"sipp carrier failed:\n{output}\n{gateway.output()}"
                await wait_for(lambda: driver.ended() >= calls, 30, f"{calls} call.ended")
            assert driver.errors == []
            assert driver.out_of_order() == {}
            assert driver.ended() == calls
            print(f"\n{calls} calls sipp -> gateway -> baresip completed in {seconds:.1f} s")


async def test_sipp_agents_at_50_calls_per_second(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    calls, rate = 500, 50
    async with gateway_process(admin_dsn, broker, tmp_path, {EXTENSION: password}) as gateway:
        agent_port = free_port()
        agent = await asyncio.create_subprocess_exec(
            tool("sipp", "sip-tester"),
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(agent_port),
            "-nostdin",
            "-mp",
            str(free_port()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            register = tmp_path / "register.xml"
            register.write_text(
                REGISTER.replace("{ext}", EXTENSION)
                .replace("{contact_port}", str(agent_port))
                .replace("{password}", password)
            )
            code, output = await sipp(
                [
                    "-sf",
                    str(register),
                    "-m",
                    "1",
                    f"127.0.0.1:{gateway.sip_port}",
                    "-p",
                    str(free_port()),
                ],
                tmp_path,
            )
            assert code == 0, f"REGISTER failed:\n{output}"
            driver = Driver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
            async with driving(driver):
                scenario = tmp_path / "carrier.xml"
                scenario.write_text(CARRIER.replace("{talk_ms}", "1000"))
                started = time.monotonic()
                code, output = await sipp(
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
                        "400",
                        f"127.0.0.1:{gateway.sip_port}",
                        "-p",
                        str(free_port()),
                    ],
                    tmp_path,
                )
                seconds = time.monotonic() - started
                assert code == 0, f"sipp carrier failed:\n{output}\n{gateway.output()}"
                await wait_for(lambda: driver.ended() >= calls, 60, f"{calls} call.ended")
            assert driver.errors == []
            assert driver.out_of_order() == {}
            print(f"\n{calls} calls at {rate}/s sipp -> gateway -> sipp agent in {seconds:.1f} s")
        finally:
            agent.kill()
            await agent.wait()
