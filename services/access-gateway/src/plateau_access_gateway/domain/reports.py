"""Report requests and their shapes: granularities, period limits, export columns, cursors.

Pure: what a report or call search may ask for and how its rows are laid out; the reading
is in ``adapters.read_models``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "CALL_COLUMNS",
    "EARLIEST",
    "LATEST",
    "MAX_SPAN",
    "METRICS",
    "REPORT_COLUMNS",
    "CursorError",
    "Granularity",
    "ReportKind",
    "checked_instant",
    "decode_cursor",
    "encode_cursor",
    "period_problem",
    "report_cells",
]


class Granularity(StrEnum):
    """The length of a report's periods (hour, day and month in the tenant's time zone)."""

    QUARTER_HOUR = "15min"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class ReportKind(StrEnum):
    """What a report is about (the path segment), and the read models' dimension name."""

    QUEUES = "queues"
    AGENTS = "agents"
    CAMPAIGNS = "campaigns"

    @property
    def dimension(self) -> str:
        return self.value.removesuffix("s")


#: The longest period one report may cover at each granularity (keeps answers bounded).
MAX_SPAN: Mapping[Granularity, timedelta] = {
    Granularity.QUARTER_HOUR: timedelta(days=31),
    Granularity.HOUR: timedelta(days=93),
    Granularity.DAY: timedelta(days=731),
    Granularity.MONTH: timedelta(days=3660),
}

#: Metrics each report row carries (names of the SQL formulas of docs/metrics.md).
METRICS = (
    "service_level",
    "asa_ms",
    "aht_ms",
    "abandonment_rate",
    "occupancy",
    "compliance_abandonment_rate",
)

#: The measures written as columns of a report export, in this order; others follow sorted.
REPORT_MEASURES = (
    "offered",
    "answered",
    "abandoned",
    "abandoned_short",
    "answer_wait_ms",
    "handled",
    "handle_ms",
)

REPORT_COLUMNS = (
    "dimension",
    "id",
    "period_start",
    "service_level_threshold_s",
    *METRICS,
    *REPORT_MEASURES,
    "other_measures",
)

CALL_COLUMNS = (
    "call_id",
    "direction",
    "started_at",
    "answered_at",
    "ended_at",
    "outcome",
    "end_cause",
    "ani",
    "dnis",
    "campaign_id",
    "queues",
    "agents",
    "wait_ms",
    "talk_ms",
    "hold_ms",
    "wrap_up_ms",
    "transfers",
)


def period_problem(start: datetime, end: datetime, granularity: Granularity) -> str | None:
    """What is wrong with a report's period (None when it is fine)."""
    if start.tzinfo is None or end.tzinfo is None:
        return "give from and to with their UTC offset (e.g. 2026-05-04T00:00:00+01:00)"
    if end <= start:
        return "to must be after from"
    if end - start > MAX_SPAN[granularity]:
        days = MAX_SPAN[granularity].days
        return f"a {granularity.value} report covers at most {days} days; use a coarser granularity"
    return None


def report_cells(row: Mapping[str, Any]) -> list[object]:
    """One report row as export cells, in ``REPORT_COLUMNS`` order."""
    measures: Mapping[str, int] = row["measures"]
    others = {k: v for k, v in sorted(measures.items()) if k not in REPORT_MEASURES}
    return [
        row["dimension"],
        row["dimension_id"],
        row["period_start"],
        row["service_level_threshold_s"] if row["dimension"] == "queue" else None,
        *(row[m] for m in METRICS),
        *(measures.get(m, 0) for m in REPORT_MEASURES),
        " ".join(f"{k}={v}" for k, v in others.items()),
    ]


#: The instants a request may name: a day inside Python's datetime range at either end, so
#: that no conversion (to UTC for the database, to a tenant's local time) overflows.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
_At = TypeVar("_At", bound=datetime | None)


def checked_instant(at: _At) -> _At:
    """``at`` itself when it lies between ``EARLIEST`` and ``LATEST`` (a time without offset
    read as UTC); else ValueError, which a request's validation turns into a 422."""
    if at is None:
        return at
    try:
        utc = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        earliest, latest = EARLIEST.date().isoformat(), LATEST.date().isoformat()
        raise ValueError(f"dates must lie between {earliest} and {latest} (UTC)")
    return at


class CursorError(ValueError):
    """A pagination cursor this server did not hand out."""


def encode_cursor(started_at: datetime, call_id: str) -> str:
    """An opaque cursor naming the last row of a page."""
    raw = json.dumps([started_at.isoformat(), call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, call_id = json.loads(raw)
        at = datetime.fromisoformat(started)
    except (ValueError, TypeError, binascii.Error):
        raise CursorError("the cursor is not one this server handed out") from None
    if at.tzinfo is None or not isinstance(call_id, str):
        raise CursorError("the cursor is not one this server handed out")
    try:
        checked_instant(at)
    except ValueError:
        raise CursorError("the cursor is not one this server handed out") from None
    return at, call_id
