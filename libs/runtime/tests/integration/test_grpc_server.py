"""The gRPC server over real loopback sockets: health, reflection, a taken port, and trace
context and tenant carried from client metadata into the handler."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from plateau_runtime.errors import DependencyUnavailableError
from plateau_runtime.grpc_server import (
    GrpcServer,
    GrpcService,
    current_tenant,
    insecure_channel,
    use_tenant,
)
from plateau_runtime.tracing import configure_tracing

pytestmark = pytest.mark.integration

PROBE_SERVICE = "plateau.test.v1.Probe"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Finished spans of this process (the global provider is an SDK one)."""
    configure_tracing("test")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


class Probe:
    """A test-only service whose one method reports what its handler saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[trace.SpanContext, Any, str | None]] = []

    async def who_am_i(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        span = trace.get_current_span()
        parent = span.parent if isinstance(span, ReadableSpan) else None
        self.seen.append((span.get_span_context(), parent, current_tenant()))
        return b"ok"

    async def tenants(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        for _ in range(3):
            yield (current_tenant() or "-").encode()
            await asyncio.sleep(0)

    async def refuse(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your queue")
        raise AssertionError("abort returns only by raising")

    def add_to_server(self, servicer: Probe, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            PROBE_SERVICE,
            {
                "WhoAmI": grpc.unary_unary_rpc_method_handler(servicer.who_am_i),
                "Tenants": grpc.unary_stream_rpc_method_handler(servicer.tenants),
                "Refuse": grpc.unary_unary_rpc_method_handler(servicer.refuse),
            },
        )
        server.add_generic_rpc_handlers((handler,))


@pytest.fixture
async def probe_server() -> AsyncIterator[tuple[GrpcServer, Probe]]:
    probe = Probe()
    server = GrpcServer("127.0.0.1", 0, [GrpcService(PROBE_SERVICE, probe.add_to_server, probe)])
    await server.start()
    yield server, probe
    await server.stop(grace=0.5)


async def test_health_is_serving_when_started_and_not_serving_at_shutdown(
    probe_server: tuple[GrpcServer, Probe],
) -> None:
    server, _ = probe_server
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        overall = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        probe = await stub.Check(health_pb2.HealthCheckRequest(service=PROBE_SERVICE), timeout=5)
        assert overall.status == SERVING and probe.status == SERVING

        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == SERVING
        stopping = asyncio.create_task(server.stop(grace=1.0))
        changed = await asyncio.wait_for(watch.read(), 5)
        assert changed.status == NOT_SERVING
        await stopping
        watch.cancel()
    async with grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_reflection_lists_the_served_services(
    probe_server: tuple[GrpcServer, Probe],
) -> None:
    server, _ = probe_server
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await asyncio.wait_for(call.read(), 5)
        await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert {
        PROBE_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


async def test_a_taken_port_is_a_clear_dependency_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DependencyUnavailableError) as taken:
            await GrpcServer("127.0.0.1", port).start()
    assert str(port) in str(taken.value) and "PLATEAU_GRPC_PORT" in str(taken.value)


async def test_a_second_server_cannot_share_the_port_of_a_running_one() -> None:
    first = GrpcServer("127.0.0.1", 0)
    await first.start()
    try:
        with pytest.raises(DependencyUnavailableError, match=str(first.port)):
            await GrpcServer("127.0.0.1", first.port).start()
    finally:
        await first.stop(grace=0)


async def test_trace_context_and_tenant_travel_from_client_metadata_into_the_handler(
    probe_server: tuple[GrpcServer, Probe], spans: InMemorySpanExporter
) -> None:
    server, probe = probe_server
    tracer = trace.get_tracer("test")
    async with insecure_channel(server.address) as channel:
        who_am_i = channel.unary_unary(f"/{PROBE_SERVICE}/WhoAmI")
        with tracer.start_as_current_span("caller") as caller, use_tenant("acme"):
            assert await who_am_i(b"", timeout=5) == b"ok"
        assert current_tenant() is None
        assert await who_am_i(b"", timeout=5) == b"ok"  # outside any span or tenant

    (inside, parent, tenant), (alone, alone_parent, no_tenant) = probe.seen
    caller_context = caller.get_span_context()
    assert inside.trace_id == caller_context.trace_id
    assert inside.span_id != caller_context.span_id
    assert parent is not None and parent.span_id == caller_context.span_id
    assert tenant == "acme"
    assert alone.trace_id != caller_context.trace_id and alone_parent is None
    assert no_tenant is None

    server_spans = [s for s in spans.get_finished_spans() if s.name == f"{PROBE_SERVICE}/WhoAmI"]
    assert any(
        s.parent is not None and s.parent.span_id == caller_context.span_id for s in server_spans
    )
    assert all(s.kind is trace.SpanKind.SERVER for s in server_spans)


async def test_registered_servicers_run_inside_the_callers_trace(
    probe_server: tuple[GrpcServer, Probe], spans: InMemorySpanExporter
) -> None:
    server, _ = probe_server
    tracer = trace.get_tracer("test")
    async with insecure_channel(server.address) as channel:
        with tracer.start_as_current_span("prober") as prober:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    checks = [
        s
        for s in spans.get_finished_spans()
        if s.name == "grpc.health.v1.Health/Check"
        and s.parent is not None
        and s.parent.span_id == prober.get_span_context().span_id
    ]
    assert len(checks) == 1
    assert checks[0].context.trace_id == prober.get_span_context().trace_id
    assert checks[0].attributes is not None
    assert checks[0].attributes["rpc.grpc.status_code"] == 0


async def test_a_streaming_handler_keeps_the_tenant_for_its_whole_stream(
    probe_server: tuple[GrpcServer, Probe],
) -> None:
    server, _ = probe_server
    async with insecure_channel(server.address) as channel:
        tenants = channel.unary_stream(f"/{PROBE_SERVICE}/Tenants")
        with use_tenant("globex"):
            call = tenants(b"", timeout=5)
        assert [answer async for answer in call] == [b"globex"] * 3


async def test_an_abort_is_the_spans_status_not_a_crash(
    probe_server: tuple[GrpcServer, Probe], spans: InMemorySpanExporter
) -> None:
    server, _ = probe_server
    async with insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(f"/{PROBE_SERVICE}/Refuse")(b"", timeout=5)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"{PROBE_SERVICE}/Refuse"]
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert span.status.status_code is trace.StatusCode.ERROR
    assert not span.events  # no exception recorded: the handler answered
