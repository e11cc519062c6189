"""The catalogue: from an envelope back to its typed payload, through upcasters if needed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import Field, ValidationError

from plateau_contracts import catalogue
from plateau_contracts.catalogue import UnknownEventError, event, lookup, parse, upcaster
from plateau_contracts.envelope import Envelope, EventData, new_event_id
from plateau_contracts.events.calls import CallOffered
from plateau_contracts.topics import Topic

pytestmark = pytest.mark.unit

OFFERED = CallOffered(
    call_id="c1", ani="+242066123456", dnis="+242053000100", trunk="mno", sip_call_id="s1"
)


def envelope_of(event_type: str, version: int, data: dict[str, Any]) -> Envelope:
    now = datetime(2026, 5, 4, 9, 15, tzinfo=UTC)
    return Envelope(
        event_id=new_event_id(),
        type=event_type,
        schema_version=version,
        stream="test-1",
        stream_version=1,
        tenant="acme",
        occurred_at=now,
        recorded_at=now,
        data=data,
    )


@pytest.fixture
def scratch_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register throwaway events without leaking them into the real catalogue."""
    monkeypatch.setattr(catalogue, "_registry", dict(catalogue._registry))
    monkeypatch.setattr(catalogue, "_upcasters", dict(catalogue._upcasters))


def test_parse_gives_the_typed_payload() -> None:
    parsed = parse(envelope_of("call.offered", 1, OFFERED.model_dump(mode="json")))
    assert isinstance(parsed, CallOffered)
    assert parsed == OFFERED


def test_parse_validates_the_payload() -> None:
    data = OFFERED.model_dump(mode="json")
    del data["trunk"]
    with pytest.raises(ValidationError, match="trunk"):
        parse(envelope_of("call.offered", 1, data))


def test_unknown_type_or_version_raises_unknown_event_error() -> None:
    with pytest.raises(UnknownEventError, match=r"call\.teleported"):
        parse(envelope_of("call.teleported", 1, {}))
    with pytest.raises(UnknownEventError, match="v99"):
        parse(envelope_of("call.offered", 99, OFFERED.model_dump(mode="json")))
    with pytest.raises(UnknownEventError):
        lookup("call.teleported", 1)
    assert issubclass(UnknownEventError, LookupError)


@pytest.mark.usefixtures("scratch_catalogue")
def test_registering_a_type_twice_is_refused() -> None:
    @event
    class ThingSeen(EventData):
        """Test-only event."""

        event_type: ClassVar[str] = "test.thing_seen"
        topic: ClassVar[str] = Topic.CALLS

    with pytest.raises(ValueError, match="registered twice"):

        @event
        class ThingSeenAgain(EventData):
            """Test-only event with a clashing name."""

            event_type: ClassVar[str] = "test.thing_seen"
            topic: ClassVar[str] = Topic.CALLS

    assert lookup("test.thing_seen", 1) is ThingSeen


@pytest.mark.usefixtures("scratch_catalogue")
def test_an_upcaster_lifts_a_stored_v1_payload_to_v2() -> None:
    @event
    class ThingNamedV1(EventData):
        """Test-only event, first shape."""

        event_type: ClassVar[str] = "test.thing_named"
        topic: ClassVar[str] = Topic.CALLS
        name: str

    @event
    class ThingNamedV2(EventData):
        """Test-only event, second shape: the name is split and a source is added."""

        event_type: ClassVar[str] = "test.thing_named"
        schema_version: ClassVar[int] = 2
        topic: ClassVar[str] = Topic.CALLS
        given_name: str
        family_name: str
        source: str = Field(default="unknown")

    @upcaster("test.thing_named", 1)
    def split_name(data: dict[str, Any]) -> dict[str, Any]:
        given, family = data["name"].split(" ", 1)
        return {"given_name": given, "family_name": family}

    old = parse(envelope_of("test.thing_named", 1, {"name": "Ada Lovelace"}))
    assert old == ThingNamedV2(given_name="Ada", family_name="Lovelace")
    current = parse(
        envelope_of(
            "test.thing_named", 2, {"given_name": "Alan", "family_name": "Turing", "source": "x"}
        )
    )
    assert current == ThingNamedV2(given_name="Alan", family_name="Turing", source="x")
    assert ThingNamedV1 in catalogue._registry.values()


@pytest.mark.usefixtures("scratch_catalogue")
def test_without_an_upcaster_an_old_version_parses_as_itself() -> None:
    @event
    class GadgetV1(EventData):
        """Test-only event."""

        event_type: ClassVar[str] = "test.gadget_seen"
        topic: ClassVar[str] = Topic.CALLS
        size: int

    @event
    class GadgetV2(EventData):
        """Test-only event, newer shape."""

        event_type: ClassVar[str] = "test.gadget_seen"
        schema_version: ClassVar[int] = 2
        topic: ClassVar[str] = Topic.CALLS
        size_mm: int

    assert parse(envelope_of("test.gadget_seen", 1, {"size": 3})) == GadgetV1(size=3)


def test_scratch_events_did_not_leak() -> None:
    assert not [cls for cls in catalogue.all_events() if cls.event_type.startswith("test.")]
