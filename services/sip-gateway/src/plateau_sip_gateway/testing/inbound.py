"""Inbound calls through a real gateway process: the process itself and the acd's stand-in.

``gateway_process`` runs ``python -m plateau_sip_gateway`` as a user starts it (its own
schema, trunk and extension files, free ports, output in ``gateway.log``); ``OfferDriver``
plays the acd: it reads ``plateau.calls`` and calls ``CallControl.ConnectAgent`` for each
``call.offered``. Shared by ``bench/sip_inbound.py`` and the end-to-end tests.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from plateau_contracts.envelope import Envelope
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.bus import ensure_topics
from plateau_runtime.db import connect
from plateau_runtime.migrations import migrate, role_dsn
from plateau_runtime.services import service as service_spec
from plateau_sip_gateway.testing.sipp import free_both, free_port

CALLS_TOPIC = "plateau.calls"
ENTRY_NUMBER = "+242053000100"
EXPECTED_CALL = ["call.offered", "call.agent_ringing", "call.connected", "call.ended"]


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not listen in time (the message has its log)."""


@dataclass
class GatewayProcess:
    """A running ``python -m plateau_sip_gateway`` and where to reach it."""

    process: subprocess.Popen[bytes]
    sip_port: int
    grpc_port: int
    tenant: str
    log: Path

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def output(self) -> str:
        """The end of the gateway's log."""
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.asynccontextmanager
async def gateway_process(
    admin_dsn: str,
    bootstrap: str,
    workdir: Path,
    passwords: dict[str, str],
    *,
    tenant: str | None = None,
    max_calls: int = 500,
    start_timeout: float = 30.0,
) -> AsyncIterator[GatewayProcess]:
    """The gateway on free ports with one carrier trunk (127.0.0.1, DNIS 053000100) and
    the extensions ``passwords`` names; stopped with SIGTERM when the block ends."""
    role_password = secrets.token_urlsafe(16)
    service = service_spec("sip-gateway").service_schema()
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, service, role_password)
    finally:
        await admin.close()
    tenant = tenant or f"e2e-{secrets.token_hex(3)}"
    trunk = {
        "name": "carrier",
        "tenant": tenant,
        "source_networks": ["127.0.0.1/32"],
        "entry_points": {ENTRY_NUMBER: "sales"},
        "capacity": {"kind": "calls", "max_calls": max_calls},
        "options_interval_s": 0,
    }
    trunks = workdir / "trunks.json"
    trunks.write_text(json.dumps({"trunks": [trunk]}))
    extensions = workdir / "extensions.json"
    extensions.write_text(json.dumps(passwords))
    extensions.chmod(0o600)
    sip_port, grpc_port = free_both(), free_port(socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update(
        PLATEAU_HOME=str(workdir / "home"),
        PLATEAU_DATABASE_URL=role_dsn(admin_dsn, service, role_password),
        PLATEAU_KAFKA_BOOTSTRAP=bootstrap,
        PLATEAU_GRPC_PORT=str(grpc_port),
        PLATEAU_SIP_PORT=str(sip_port),
        PLATEAU_SIP_TRUNKS_FILE=str(trunks),
        PLATEAU_SIP_EXTENSIONS_FILE=str(extensions),
        PLATEAU_SIP_TENANT=tenant,
        PLATEAU_LOG_FORMAT="json",
        PLATEAU_LOG_LEVEL="warning",
        # Unbuffered, so that the log shows what the gateway did even when a run is stopped.
        PYTHONUNBUFFERED="1",
    )
    log = workdir / "gateway.log"
    process = spawn_gateway(env, log)
    running = GatewayProcess(process, sip_port, grpc_port, tenant, log)
    try:
        await _wait_for_grpc(running, start_timeout)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def spawn_gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m plateau_sip_gateway`` as a user starts it, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "plateau_sip_gateway"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _wait_for_grpc(gateway: GatewayProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise GatewayStartError(
                f"the gateway exited {gateway.process.returncode}:\n{gateway.output()}"
            )
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", gateway.grpc_port), 0.2).close()
            await asyncio.sleep(0.5)  # the SIP task starts right after gRPC
            return
        await asyncio.sleep(0.1)
    raise GatewayStartError(
        f"the gateway did not listen on gRPC {gateway.grpc_port} within {timeout:.0f} s:\n"
        f"{gateway.output()}"
    )


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        return [TopicPartition(topic, p) for p in sorted(await probe.partitions_for(topic))]
    finally:
        await probe.stop()


@dataclass
class OfferDriver:
    """The acd's stand-in: on each ``call.offered`` of the tenant, ConnectAgent.

    It reads every partition of ``plateau.calls`` from the beginning by assignment, not
    as a consumer group: a group's join waits out the broker's initial rebalance delay
    (about 3 s), and the calls offered meanwhile would then reach the gateway as one
    burst of ConnectAgent. ``ready`` is set once it reads. ``streams`` keeps each
    stream's (version, type) in arrival order, redeliveries dropped.
    """

    bootstrap: str
    tenant: str
    grpc_port: int
    extension: str
    agent_id: str = "a-1001"
    queue_id: str = "q-sales"
    ring_timeout_s: int = 10
    streams: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _pending: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Read and connect until ``stop``; ConnectAgent calls run concurrently."""
        await ensure_topics(self.bootstrap, [CALLS_TOPIC])
        partitions = await _partitions(self.bootstrap, CALLS_TOPIC)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            for partition in partitions:
                await consumer.position(partition)
            self.ready.set()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                stub = pb_grpc.CallControlStub(channel)
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=20, max_records=1000)
                    for records in batch.values():
                        for record in records:
                            self._receive(stub, Envelope.from_message(record.value))
                if self._pending:
                    await asyncio.wait(list(self._pending), timeout=15)
        finally:
            await consumer.stop()

    def _receive(self, stub: pb_grpc.CallControlStub, envelope: Envelope) -> None:
        if envelope.tenant != self.tenant:
            return
        seen = self.streams.setdefault(envelope.stream, [])
        if any(version == envelope.stream_version for version, _ in seen):
            return  # at-least-once: a redelivery
        seen.append((envelope.stream_version, envelope.type))
        if envelope.type == "call.offered":
            task = asyncio.ensure_future(self._connect(stub, envelope))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, stub: pb_grpc.CallControlStub, envelope: Envelope) -> None:
        call_id = str(envelope.data["call_id"])
        request = pb.ConnectAgentRequest(
            request_id=str(envelope.event_id),
            call_id=call_id,
            agent_id=self.agent_id,
            extension=self.extension,
            queue_id=self.queue_id,
        )
        request.ring_timeout.FromSeconds(self.ring_timeout_s)
        try:
            await stub.ConnectAgent(
                request, metadata=(("x-plateau-tenant", self.tenant),), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"{call_id}: {exc.code().name} {exc.details()}")

    def count(self, event_type: str) -> int:
        """How many calls have had an event of ``event_type``."""
        return sum(1 for seen in self.streams.values() if any(t == event_type for _, t in seen))

    def ended(self) -> int:
        return sum(1 for seen in self.streams.values() if seen and seen[-1][1] == "call.ended")

    def out_of_order(self) -> dict[str, list[str]]:
        """Calls whose events did not arrive as offered, ringing, connected, ended."""
        return {
            stream: [t for _, t in seen]
            for stream, seen in self.streams.items()
            if stream.startswith("call-")
            and ([t for _, t in seen] != EXPECTED_CALL or [v for v, _ in seen] != [1, 2, 3, 4])
        }


@contextlib.asynccontextmanager
async def driving(driver: OfferDriver, ready_timeout: float = 30.0) -> AsyncIterator[OfferDriver]:
    """``driver`` running (and reading) for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(stop))
    try:
        ready = asyncio.create_task(driver.ready.wait())
        await asyncio.wait(
            {ready, task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not driver.ready.is_set():
            ready.cancel()
            if task.done():
                task.result()  # its error
            raise TimeoutError(f"the driver did not read {CALLS_TOPIC} in {ready_timeout} s")
        yield driver
    finally:
        stop.set()
        async with asyncio.timeout(30):
            with contextlib.suppress(asyncio.CancelledError):
                await task
