"""Logging: one structlog setup for every process, JSON lines for machines, colours for people.

Every line carries ``timestamp`` (UTC, ISO 8601), ``level``, ``service`` and ``event``, plus
``trace_id`` and ``span_id`` while an OpenTelemetry span is active, so a log line leads to
its trace. Records of libraries that log through the standard library (asyncpg, aiokafka,
grpc) go through the same processors and renderer, from WARNING up.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]

#: Name of the root handler this module installs, so reconfiguring replaces it.
_HANDLER_NAME = "plateau"
#: Standard-library loggers are noisy below this level; they stay quiet unless it matters.
_STDLIB_FLOOR = logging.WARNING


def _add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


def _add_service(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return number


def _wants_json(fmt: LogFormat, stream: TextIO) -> bool:
    return not _is_tty(stream) if fmt == "auto" else fmt == "json"


def configure_logging(
    service: str,
    fmt: LogFormat = "auto",
    level: str | int = "info",
    *,
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and the standard library's root logger for this process.

    ``fmt="auto"`` writes JSON lines unless ``stream`` (standard output by default) is a
    terminal. Calling it again replaces the previous setup rather than adding to it.
    """
    out = stream if stream is not None else sys.stdout
    threshold = _level_number(level)
    as_json = _wants_json(fmt, out)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_service(service),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_trace_context,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if as_json:
        # The traceback becomes one string field, so a crash is still one JSON line.
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(out))

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        context_class=dict,
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(out)
    handler.name = _HANDLER_NAME
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.name == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(max(threshold, _STDLIB_FLOOR))
    logging.captureWarnings(True)


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())
