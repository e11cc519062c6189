"""The pure parts of the relay and the consumer: back-off, outage reporting, routing,
headers and rejection reasons."""

from __future__ import annotations

import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from plateau_contracts.envelope import Envelope, new_event_id, utc_now
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import StoreMark, rejection_reason, store_mark
from plateau_runtime.eventstore import StoredEvent
from plateau_runtime.outbox import Backoff, Outage, TopicRouter, describe_error, message_headers

pytestmark = pytest.mark.unit


def envelope(
    type_: str = "call.offered", version: int = 1, traceparent: str | None = None
) -> Envelope:
    now = utc_now()
    return Envelope(
        event_id=new_event_id(),
        type=type_,
        schema_version=version,
        stream="call-1",
        stream_version=1,
        tenant="acme",
        occurred_at=now,
        recorded_at=now,
        traceparent=traceparent,
        data={},
    )


def test_backoff_doubles_up_to_its_ceiling_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_once_then_reminded_then_closed() -> None:
    clock = FakeClock()
    outage = Outage(structlog.get_logger("t"), "relay.dependency", remind_every=60, clock=clock)
    with capture_logs() as logs:
        outage.recovered()  # nothing to report
        for _ in range(50):
            outage.failed(ConnectionRefusedError(111, "Connection refused"), relay="kafka")
            clock.now += 1.5
        outage.recovered(relay="kafka")
        outage.failed(TimeoutError(), relay="kafka")
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("relay.dependency.unavailable", "warning"),
        ("relay.dependency.still_unavailable", "warning"),
        ("relay.dependency.recovered", "info"),
        ("relay.dependency.unavailable", "warning"),
    ]
    assert logs[0]["error"] == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert logs[0]["relay"] == "kafka"
    assert logs[1]["attempts"] == 41 and logs[1]["down_for_s"] == 60.0
    assert logs[2]["attempts"] == 50 and logs[2]["down_for_s"] == 75.0
    assert logs[3]["error"] == "TimeoutError"


def test_describe_error_keeps_to_one_line() -> None:
    assert describe_error(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert describe_error(KeyError()) == "KeyError"


def test_headers_carry_trace_context_type_and_id() -> None:
    traced = envelope(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert message_headers(traced) == [
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("event-type", b"call.offered"),
        ("event-id", str(traced.event_id).encode()),
    ]
    assert [name for name, _ in message_headers(envelope())] == ["event-type", "event-id"]


def test_headers_say_where_a_stored_event_is_recorded_and_the_consumer_reads_it_back() -> None:
    event = envelope()
    stored = StoredEvent(42, event, bytes(32), bytes(range(32)))
    headers = message_headers(event, stored, "sip_gateway")
    assert headers[-3:] == [
        ("event-store", b"sip_gateway"),
        ("store-position", b"42"),
        ("chain-hash", bytes(range(32)).hex().encode()),
    ]
    assert store_mark(headers) == StoreMark("sip_gateway", 42, bytes(range(32)).hex())
    # Messages relayed without them (an older build) carry no mark.
    assert store_mark(message_headers(event)) is None
    assert store_mark(None) is None
    garbled = [("event-store", b"acd"), ("store-position", b"x"), ("chain-hash", b"")]
    assert store_mark(garbled) is None


def test_the_router_finds_a_types_topic_in_the_catalogue() -> None:
    router = TopicRouter()
    assert router.topic_of(envelope("call.offered")) == Topic.CALLS
    # A stored event of a schema version this build only knows through an upcaster.
    assert router.topic_of(envelope("call.offered", version=99)) == Topic.CALLS
    assert router.topic_of(envelope("test.never_registered")) is None


def test_a_rejection_reason_names_what_is_wrong_in_one_line() -> None:
    with pytest.raises(ValidationError) as invalid:
        Envelope.from_message(b'{"type": "call.offered"}')
    reason = rejection_reason(invalid.value)
    assert reason.startswith("not an event envelope: ")
    assert "event_id: Field required" in reason
    assert "(+" in reason  # more than five problems: the rest are counted
    assert "\n" not in reason
    with pytest.raises(ValidationError) as not_json:
        Envelope.from_message(b"\xff")
    assert "\n" not in rejection_reason(not_json.value)
    assert rejection_reason(ValueError("no value")) == "ValueError: no value"
