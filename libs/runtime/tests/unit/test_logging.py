"""The one logging setup: JSON lines with service, level, event, time and the active trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from plateau_runtime.logging import configure_logging

pytestmark = pytest.mark.unit


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_carries_service_level_event_time_and_the_active_trace() -> None:
    out = io.StringIO()
    configure_logging("acd", "json", "info", stream=out)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("route call") as span:
        structlog.get_logger().info("call.routed", queue="care")
    (line,) = lines(out)
    context = span.get_span_context()
    assert line["event"] == "call.routed"
    assert line["service"] == "acd"
    assert line["level"] == "info"
    assert line["queue"] == "care"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    timestamp = datetime.fromisoformat(str(line["timestamp"]))
    assert timestamp.utcoffset() is not None and timestamp.utcoffset().total_seconds() == 0


def test_no_trace_fields_outside_a_span_and_no_lines_below_the_level() -> None:
    out = io.StringIO()
    configure_logging("dialer", "json", "warning", stream=out)
    log = structlog.get_logger()
    log.info("pacing.tick")
    log.warning("pacing.abandon_rate_high", rate=0.04)
    (line,) = lines(out)
    assert line["event"] == "pacing.abandon_rate_high" and line["level"] == "warning"
    assert "trace_id" not in line and "span_id" not in line


def test_standard_library_records_share_the_format_from_warning_up() -> None:
    out = io.StringIO()
    configure_logging("acd", "json", "debug", stream=out)
    logging.getLogger("aiokafka").info("metadata refreshed")
    logging.getLogger("asyncpg").warning("connection %s lost", "#3")
    (line,) = lines(out)
    assert line["event"] == "connection #3 lost"
    assert line["logger"] == "asyncpg"
    assert line["service"] == "acd" and line["level"] == "warning"
    assert "timestamp" in line


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    out = io.StringIO()
    configure_logging("acd", "json", "info", stream=out)
    try:
        raise RuntimeError("queue index corrupt")
    except RuntimeError:
        structlog.get_logger().exception("task.crashed")
    (line,) = lines(out)
    assert line["level"] == "error"
    assert "Traceback" in str(line["exception"])
    assert "RuntimeError: queue index corrupt" in str(line["exception"])


def test_configuring_twice_does_not_duplicate_lines() -> None:
    out = io.StringIO()
    configure_logging("acd", "json", "info", stream=out)
    configure_logging("acd", "json", "info", stream=out)
    structlog.get_logger().info("once")
    logging.getLogger("grpc").error("once too")
    assert [line["event"] for line in lines(out)] == ["once", "once too"]


def test_auto_is_json_in_a_pipe_and_readable_text_on_a_terminal() -> None:
    piped = io.StringIO()
    configure_logging("acd", "auto", "info", stream=piped)
    structlog.get_logger().info("hello")
    assert json.loads(piped.getvalue())["event"] == "hello"

    terminal = Terminal()
    configure_logging("acd", "auto", "info", stream=terminal)
    structlog.get_logger().info("hello")
    text = terminal.getvalue()
    assert "hello" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("acd", "json", "verbose", stream=io.StringIO())
