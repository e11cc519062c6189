"""A service process as ``plateau up`` runs it: ``python -m plateau_acd`` against the session's
real PostgreSQL and broker, watched through its gRPC health service, stdout and exit status."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plateau_runtime.db import connect
from plateau_runtime.embedded import EmbeddedBroker, free_port
from plateau_runtime.migrations import migrate, role_dsn
from plateau_runtime.services import service

pytestmark = pytest.mark.integration

ACD = service("acd")
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
async def acd_dsn(admin_dsn: str) -> str:
    """The DSN of the acd's own role, its schema migrated as ``plateau migrate`` would."""
    password = secrets.token_urlsafe(16)
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, ACD.service_schema(), password)
    finally:
        await admin.close()
    return role_dsn(admin_dsn, ACD.service_schema(), password)


@pytest.fixture
async def empty_database_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A database on the same server where nothing was ever migrated."""
    name = f"unmigrated_{secrets.token_hex(4)}"
    admin = await connect(admin_dsn)
    try:
        await admin.execute(f"create database {name}")
        parts = urlsplit(admin_dsn)
        yield urlunsplit(parts._replace(path=f"/{name}"))
        await admin.execute(f"drop database {name} with (force)")
    finally:
        await admin.close()


@dataclass
class ServiceProcess:
    """A started service process and the files its output goes to."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text()

    def err(self) -> str:
        return self.stderr.read_text()

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out().splitlines() if line.strip()]

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"still running after {timeout} s; stdout:\n{self.out()[-2000:]}")
            await asyncio.sleep(0.05)
        return self.process.returncode


def service_env(**settings: str) -> dict[str, str]:
    """The environment ``plateau up`` gives a service: ours, minus PLATEAU_*, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env["PLATEAU_LOG_FORMAT"] = "json"
    env.update({f"PLATEAU_{k.upper()}": v for k, v in settings.items()})
    return env


Start = Callable[..., ServiceProcess]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts service processes (``python -m plateau_acd`` unless told otherwise); kills
    any still running at the end of the test."""
    started: list[ServiceProcess] = []

    def start(env: dict[str, str], argv: list[str] | None = None) -> ServiceProcess:
        n = len(started)
        stdout, stderr = tmp_path / f"stdout-{n}", tmp_path / f"stderr-{n}"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                argv or [sys.executable, "-m", ACD.package],
                env=env,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        started.append(ServiceProcess(process, stdout, stderr))
        return started[-1]

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()


async def wait_until_serving(proc: ServiceProcess, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                pytest.fail(f"exited {proc.process.returncode} before serving:\n{proc.err()}")
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"not SERVING after {timeout} s; stdout:\n{proc.out()[-2000:]}")


def assert_one_line_error(proc: ServiceProcess, *fragments: str) -> str:
    err = proc.err()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("plateau-acd: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


async def test_the_service_becomes_serving_and_exits_0_soon_after_sigterm(
    start: Start, acd_dsn: str, broker: EmbeddedBroker
) -> None:
    port = free_port()
    proc = start(
        service_env(database_url=acd_dsn, kafka_bootstrap=broker.bootstrap, grpc_port=str(port))
    )
    await wait_until_serving(proc, port)

    signalled = time.monotonic()
    proc.process.send_signal(signal.SIGTERM)
    assert await proc.wait(15) == 0
    assert time.monotonic() - signalled < 10
    assert proc.err() == ""
    lines = proc.log_lines()  # every line of stdout is JSON
    events = [line["event"] for line in lines]
    assert {"service.starting", "service.ready", "service.stopping", "service.stopped"} <= set(
        events
    )
    assert all(line["service"] == "acd" and "timestamp" in line for line in lines)


async def test_an_unmigrated_schema_stops_the_service_with_one_line_saying_plateau_migrate(
    start: Start, empty_database_dsn: str, broker: EmbeddedBroker
) -> None:
    proc = start(
        service_env(
            database_url=empty_database_dsn,
            kafka_bootstrap=broker.bootstrap,
            grpc_port=str(free_port()),
        )
    )
    assert await proc.wait(30) == 2
    assert_one_line_error(proc, "plateau migrate", "'acd'")


async def test_an_invalid_grpc_port_is_named_in_one_line(start: Start) -> None:
    proc = start(service_env(grpc_port="abc"))
    assert await proc.wait(30) == 2
    assert_one_line_error(proc, "PLATEAU_GRPC_PORT", "'abc'")


async def test_an_unreachable_database_is_one_clear_line(start: Start) -> None:
    nobody = free_port()
    proc = start(
        service_env(
            database_url=f"postgresql://plateau_acd:x@127.0.0.1:{nobody}/postgres",
            grpc_port=str(free_port()),
        )
    )
    assert await proc.wait(30) == 2
    assert_one_line_error(proc, f"127.0.0.1:{nobody}", "cannot be reached", "PLATEAU_DATABASE_URL")


async def test_a_taken_grpc_port_is_one_line_naming_the_port(
    start: Start, acd_dsn: str, broker: EmbeddedBroker
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = start(
            service_env(database_url=acd_dsn, kafka_bootstrap=broker.bootstrap, grpc_port=str(port))
        )
        assert await proc.wait(30) == 2
    assert_one_line_error(proc, f"port {port}", "PLATEAU_GRPC_PORT")


CRASHING_SERVICE = """
import asyncio

from plateau_runtime.service import Components, ServiceHost
from plateau_runtime.services import service


async def doomed(stop: asyncio.Event) -> None:
    await asyncio.sleep(0.2)
    raise RuntimeError("the queue index is corrupt")


host = ServiceHost(service("acd"), lambda resources: Components(tasks={"doomed": doomed}))
raise SystemExit(host.run())
"""


async def test_a_crashed_background_task_is_logged_as_json_and_exits_non_zero(
    start: Start, acd_dsn: str, broker: EmbeddedBroker
) -> None:
    proc = start(
        service_env(
            database_url=acd_dsn, kafka_bootstrap=broker.bootstrap, grpc_port=str(free_port())
        ),
        [sys.executable, "-c", CRASHING_SERVICE],
    )
    assert await proc.wait(30) == 1
    crashes = [line for line in proc.log_lines() if line["event"] == "service.task_crashed"]
    assert len(crashes) == 1
    crash = crashes[0]
    assert crash["task"] == "doomed" and crash["level"] == "error"
    assert "Traceback" in str(crash["exception"])
    assert "RuntimeError: the queue index is corrupt" in str(crash["exception"])
    assert "Traceback" not in proc.err()
