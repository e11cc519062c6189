"""Probes of the running parts: PostgreSQL, the broker and the services' gRPC health."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import asyncpg
import grpc
from aiokafka.admin import AIOKafkaAdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plateau_contracts.topics import Topic
from plateau_runtime.embedded import port_is_taken

SERVING = "SERVING"


@dataclass(frozen=True)
class Health:
    """The outcome of one probe: healthy or not, and a short detail for a person."""

    healthy: bool
    state: str
    detail: str


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` is taken: something listens there, or holds it bound."""
    if port_is_taken(port, host):
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def grpc_health(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> str:
    """The gRPC health status of a server (``SERVING``...), or why it could not be asked."""
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.UNAVAILABLE:
                return "UNREACHABLE"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return "NO_ANSWER"
            return code.name if code is not None else "ERROR"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def postgres_health(dsn: str, timeout: float = 3.0) -> Health:
    """Connect and ask the server's version."""
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Health(False, "down", f"cannot connect ({exc.__class__.__name__}: {exc})")
    try:
        version = await conn.fetchval("select current_setting('server_version')")
    finally:
        await conn.close()
    return Health(True, "healthy", f"accepting connections, PostgreSQL {version}")


async def broker_health(bootstrap: str, timeout: float = 5.0) -> Health:
    """Connect, fetch the cluster metadata and check that Plateau's topics exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        topics = set(await asyncio.wait_for(admin.list_topics(), timeout))
    except Exception as exc:  # aiokafka raises many kinds; all mean "not healthy" here
        return Health(False, "down", f"no metadata ({exc.__class__.__name__})")
    finally:
        await admin.close()
    missing = sorted(t.value for t in Topic if t.value not in topics)
    if missing:
        return Health(False, "degraded", f"topics missing: {', '.join(missing)}")
    return Health(True, "healthy", f"metadata ok, {len(Topic)} Plateau topics")
