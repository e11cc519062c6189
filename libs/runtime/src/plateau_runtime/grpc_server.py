"""gRPC wiring shared by every service: the server with health and reflection, and the
interceptors that carry trace context and tenant through metadata.

Handlers never receive trace or tenant as arguments. The server interceptor extracts the
W3C ``traceparent`` and the ``x-plateau-tenant`` metadata of each call, runs the handler
inside a server span whose parent is the caller's span, and sets the tenant in a context
variable read with ``current_tenant()``. The client interceptors do the reverse on the way
out.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import inspect
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from plateau_runtime.errors import DependencyUnavailableError
from plateau_runtime.tracing import current_traceparent, extract_headers

TENANT_METADATA_KEY = "x-plateau-tenant"
_TRACE_METADATA_KEYS = ("traceparent", "tracestate")
_TRACER_NAME = "plateau_runtime.grpc"

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("plateau_tenant", default=None)


def current_tenant() -> str | None:
    """The tenant of the call being handled (from ``x-plateau-tenant``), or None."""
    return _tenant.get()


@contextlib.contextmanager
def use_tenant(tenant: str | None) -> Iterator[None]:
    """Act for ``tenant`` in the block: outgoing calls carry it, ``current_tenant()`` sees it."""
    token = _tenant.set(tenant)
    try:
        yield
    finally:
        _tenant.reset(token)


# --------------------------------------------------------------------------------------------
# Server side


AddServicerFn = Callable[[Any, grpc.aio.Server], None]


@dataclass(frozen=True)
class GrpcService:
    """A servicer to serve: the generated ``add_<X>Servicer_to_server``, the servicer, and
    the service's full proto name (``plateau.acd.v1.AgentDesk``) for health and reflection."""

    name: str
    add_to_server: AddServicerFn
    servicer: object


@dataclass(frozen=True)
class _CallContext:
    method: str
    parent: otel_context.Context
    tenant: str | None


def _call_context(details: grpc.HandlerCallDetails) -> _CallContext:
    carrier: dict[str, str] = {}
    tenant: str | None = None
    for key, value in details.invocation_metadata or ():
        if isinstance(value, bytes):
            continue
        if key in _TRACE_METADATA_KEYS:
            carrier[key] = value
        elif key == TENANT_METADATA_KEY:
            tenant = value.strip() or None
    return _CallContext(details.method or "", extract_headers(carrier), tenant)


def _span_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


@contextlib.contextmanager
def _in_call_context(call: _CallContext, context: Any) -> Iterator[None]:
    tracer = trace.get_tracer(_TRACER_NAME)
    token = _tenant.set(call.tenant)
    try:
        with tracer.start_as_current_span(
            call.method.lstrip("/") or "grpc",
            context=call.parent,
            kind=SpanKind.SERVER,
            attributes=_span_attributes(call.method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except grpc.aio.AbortError:
                # The handler chose the status (context.abort): an answer, not a crash.
                _record_code(span, context)
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            _record_code(span, context)
    finally:
        # An abandoned streaming handler may be closed from another context.
        with contextlib.suppress(ValueError):
            _tenant.reset(token)


def _record_code(span: trace.Span, context: Any) -> None:
    code_of = getattr(context, "code", None)
    # A handler that returns without setting a code answered OK.
    code = (code_of() if callable(code_of) else None) or grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))


def _wrap(behavior: Callable[..., Any], call: _CallContext) -> Callable[..., Any]:
    """The same kind of callable as ``behavior`` (coroutine, async generator, generator or
    plain function), running inside the call's span and tenant."""
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(request: Any, context: Any) -> AsyncIterator[Any]:
            with _in_call_context(call, context):
                async for response in behavior(request, context):
                    yield response

        return stream_out
    if inspect.iscoroutinefunction(behavior):

        async def answer(request: Any, context: Any) -> Any:
            with _in_call_context(call, context):
                return await behavior(request, context)

        return answer
    if inspect.isgeneratorfunction(behavior):

        def sync_stream_out(request: Any, context: Any) -> Iterator[Any]:
            with _in_call_context(call, context):
                yield from behavior(request, context)

        return sync_stream_out

    def sync_answer(request: Any, context: Any) -> Any:
        with _in_call_context(call, context):
            return behavior(request, context)

    return sync_answer


_HANDLER_FACTORIES = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class ContextServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs each handler inside a server span (parent: the caller's ``traceparent``) with
    the caller's tenant set for ``current_tenant()``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        call = _call_context(handler_call_details)
        for kind, factory in _HANDLER_FACTORIES:
            behavior = getattr(handler, kind, None)
            if behavior is not None:
                return factory(
                    _wrap(behavior, call),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _bind_refusal(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound right now, if it cannot (binding as gRPC does)."""
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return None  # gRPC reports an unresolvable host itself
    for family, kind, proto, _, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                return exc
    return None


class GrpcServer:
    """A ``grpc.aio`` server with the standard health and reflection services.

    Health is SERVING (overall and per service) once started, NOT_SERVING from the moment
    shutdown begins, so probes and load balancers stop sending calls before the port closes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        services: Sequence[GrpcService] = (),
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._services = tuple(services)
        # A second process on the same port must fail, not silently share it.
        self._options = [("grpc.so_reuseport", 0), *options]
        self._interceptors = [ContextServerInterceptor(), *interceptors]
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._shutting_down = False

    @property
    def service_names(self) -> list[str]:
        """The full names of the served services, the standard ones included."""
        return [s.name for s in self._services] + [health.SERVICE_NAME, reflection.SERVICE_NAME]

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        if self._port is None:
            raise RuntimeError("the gRPC server is not started")
        return self._port

    @property
    def address(self) -> str:
        return _address(self.host, self.port)

    async def start(self) -> None:
        """Bind, start and report SERVING; ``DependencyUnavailableError`` if the port is taken."""
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        for service in self._services:
            service.add_to_server(service.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(self.service_names, server)
        # Probing first gives our one-line error instead of gRPC core's log on stderr.
        refusal = _bind_refusal(self.host, self._requested_port)
        port = 0
        if refusal is None:
            try:
                port = server.add_insecure_port(_address(self.host, self._requested_port))
            except RuntimeError:
                port = 0
        if not port:
            raise self._bind_error(refusal)
        await server.start()
        self._server, self._port = server, port
        for name in ("", *(s.name for s in self._services)):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _bind_error(self, refusal: OSError | None) -> DependencyUnavailableError:
        where = f"{self.host}:{self._requested_port}"
        if refusal is not None and refusal.errno == errno.EADDRNOTAVAIL:
            return DependencyUnavailableError(
                f"the gRPC server cannot listen on {where}: no such address on this machine",
                "set PLATEAU_GRPC_HOST to one of this machine's addresses (or 0.0.0.0)",
            )
        return DependencyUnavailableError(
            f"the gRPC port {self._requested_port} on {self.host} is already in use",
            "stop the process that holds it, or set PLATEAU_GRPC_PORT to a free port",
        )

    async def set_not_serving(self) -> None:
        """Report NOT_SERVING for every service while still answering calls."""
        if not self._shutting_down:
            self._shutting_down = True
            await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float = 3.0) -> None:
        """NOT_SERVING, refuse new calls, give calls in flight ``grace`` seconds, then close."""
        await self.set_not_serving()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


# --------------------------------------------------------------------------------------------
# Client side


def outgoing_metadata(
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
) -> grpc.aio.Metadata:
    """``metadata`` plus the active ``traceparent`` and the current tenant."""
    merged = grpc.aio.Metadata(*(metadata or ()))
    taken = {key for key, _ in merged}
    traceparent = current_traceparent()
    if traceparent and "traceparent" not in taken:
        merged.add("traceparent", traceparent)
    tenant = current_tenant()
    if tenant and TENANT_METADATA_KEY not in taken:
        merged.add(TENANT_METADATA_KEY, tenant)
    return merged


def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    return details._replace(metadata=outgoing_metadata(details.metadata))


# grpc.aio files an interceptor under the first of the four kinds it is an instance of,
# so each kind needs its own class.
class _UnaryUnaryContext(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_context(details), request)


class _UnaryStreamContext(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_context(details), request)


class _StreamUnaryContext(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_context(details), requests)


class _StreamStreamContext(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_context(details), requests)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that put the active trace context and tenant on every outgoing call."""
    return [
        _UnaryUnaryContext(),
        _UnaryStreamContext(),
        _StreamUnaryContext(),
        _StreamStreamContext(),
    ]


def insecure_channel(target: str, **kwargs: Any) -> grpc.aio.Channel:
    """A channel to another Plateau service that propagates trace context and tenant."""
    interceptors = [*client_interceptors(), *kwargs.pop("interceptors", ())]
    return grpc.aio.insecure_channel(target, interceptors=interceptors, **kwargs)
