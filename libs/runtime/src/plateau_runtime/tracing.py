"""OpenTelemetry tracing: one setup, and W3C trace context carried through events, Kafka
headers and gRPC metadata so a call can be followed from SIP to every consumer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_configured = False


def configure_tracing(service: str, otlp_endpoint: str = "") -> None:
    """Install the tracer provider once per process; export over OTLP when an endpoint is set."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"plateau-{service}"}))
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError as exc:  # the exporter is an optional extra
            from plateau_runtime.errors import ConfigurationError

            raise ConfigurationError(
                "PLATEAU_OTLP_ENDPOINT is set but the OTLP exporter is not installed",
                "pip install opentelemetry-exporter-otlp-proto-grpc, or unset the variable",
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active span, or None outside any span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """A context whose parent is the given ``traceparent`` (or the empty context)."""
    if not traceparent:
        return otel_context.Context()
    return _propagator.extract({"traceparent": traceparent})


def inject_headers() -> list[tuple[str, bytes]]:
    """Kafka headers carrying the active trace context."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def extract_headers(
    headers: Iterable[tuple[str, bytes]] | Mapping[str, str] | None,
) -> otel_context.Context:
    """The trace context carried by Kafka headers (either aiokafka's tuples or a mapping)."""
    if headers is None:
        return otel_context.Context()
    if isinstance(headers, Mapping):
        carrier = {k.lower(): str(v) for k, v in headers.items()}
    else:
        carrier = {k.lower(): v.decode(errors="replace") for k, v in headers}
    return _propagator.extract(carrier)
