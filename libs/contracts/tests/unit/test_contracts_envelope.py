"""The envelope: canonical bytes for the hash chain, UTC timestamps, the wire form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from plateau_contracts.envelope import Envelope, canonical_json

pytestmark = pytest.mark.unit

EVENT_ID = UUID("0196a0e1-2b3c-7d4e-8f00-112233445566")
BRAZZAVILLE = timezone(timedelta(hours=1))


def envelope(**overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "event_id": EVENT_ID,
        "type": "call.offered",
        "schema_version": 1,
        "stream": "call-c1",
        "stream_version": 1,
        "tenant": "acme",
        "occurred_at": datetime(2026, 5, 4, 9, 15, 0, 250_000, tzinfo=UTC),
        "recorded_at": datetime(2026, 5, 4, 9, 15, 1, tzinfo=UTC),
        "data": {"call_id": "c1", "ani": "+242066123456", "trunk": "mno"},
    }
    fields.update(overrides)
    return Envelope(**fields)


def test_canonical_json_is_sorted_compact_and_independent_of_input_order() -> None:
    first = envelope(data={"b": 1, "a": {"y": 2, "x": 3}})
    second = envelope(data={"a": {"x": 3, "y": 2}, "b": 1})
    raw = first.canonical_json()
    assert raw == second.canonical_json()
    assert b" " not in raw  # compact separators: no insignificant white space
    keys = list(json.loads(raw))
    assert keys == sorted(keys)
    assert b'"data":{"a":{"x":3,"y":2},"b":1}' in raw


def test_canonical_json_is_the_same_for_the_same_instant_in_any_zone() -> None:
    utc = envelope(occurred_at=datetime(2026, 5, 4, 9, 15, 0, 250_000, tzinfo=UTC))
    local = envelope(occurred_at=datetime(2026, 5, 4, 10, 15, 0, 250_000, tzinfo=BRAZZAVILLE))
    assert utc.canonical_json() == local.canonical_json()
    decoded = json.loads(utc.canonical_json())
    assert decoded["occurred_at"] == "2026-05-04T09:15:00.250000Z"
    assert decoded["recorded_at"].endswith("Z")
    assert "+00:00" not in utc.canonical_json().decode()


def test_canonical_json_differs_when_any_field_differs() -> None:
    base = envelope().canonical_json()
    assert envelope(stream_version=2).canonical_json() != base
    assert envelope(tenant="other").canonical_json() != base
    assert envelope(data={"call_id": "c2"}).canonical_json() != base


def test_module_canonical_json_handles_uuid_and_aware_datetime() -> None:
    raw = canonical_json({"z": EVENT_ID, "a": datetime(2026, 1, 1, 1, tzinfo=BRAZZAVILLE)})
    assert raw == b'{"a":"2026-01-01T00:00:00.000000Z","z":"0196a0e1-2b3c-7d4e-8f00-112233445566"}'


@pytest.mark.parametrize("field", ["occurred_at", "recorded_at"])
def test_naive_timestamps_are_rejected(field: str) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        envelope(**{field: datetime(2026, 5, 4, 9, 15)})


def test_aware_timestamps_are_normalised_to_utc() -> None:
    event = envelope(occurred_at=datetime(2026, 5, 4, 10, 15, tzinfo=BRAZZAVILLE))
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == datetime(2026, 5, 4, 9, 15, tzinfo=UTC)


def test_wire_round_trip_gives_an_equal_envelope() -> None:
    original = envelope(
        correlation_id=UUID("0196a0e1-0000-7000-8000-000000000001"),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    parsed = Envelope.from_message(original.to_message())
    assert parsed == original
    assert parsed.canonical_json() == original.canonical_json()
    assert Envelope.from_message(original.to_message().decode()) == original


def test_wire_form_rejects_unknown_fields_and_bad_versions() -> None:
    raw = json.loads(envelope().to_message())
    with pytest.raises(ValidationError):
        Envelope.from_message(json.dumps({**raw, "extra": 1}))
    with pytest.raises(ValidationError):
        Envelope.from_message(json.dumps({**raw, "stream_version": 0}))
    with pytest.raises(ValidationError):
        Envelope.from_message(b"{not json")


def test_envelope_is_frozen() -> None:
    event = envelope()
    with pytest.raises(ValidationError):
        event.tenant = "other"  # type: ignore[misc]
