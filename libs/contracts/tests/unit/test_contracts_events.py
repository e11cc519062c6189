"""Every registered event follows the catalogue's rules: name, docs, immutability, topic."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from plateau_contracts.catalogue import all_events, lookup
from plateau_contracts.envelope import EventData
from plateau_contracts.events import access, agents, calls, dialer, routing
from plateau_contracts.events.common import StreamedEvent, split_tenant_stream
from plateau_contracts.topics import Topic

pytestmark = pytest.mark.unit

EVENTS = list(all_events())
NAME = re.compile(r"^[a-z]+(_[a-z]+)*\.[a-z]+(_[a-z]+)*$")
IRREGULAR_PAST = {"held", "became", "withdrawn"}
#: State-like names taken as given by DESIGN §4 and the issues; everything else is past tense.
NOT_PAST_TENSE = {"call.agent_ringing", "call.agent_no_answer", "agent.not_responding"}

# Values for constrained strings, by JSON-schema pattern.
PATTERN_SAMPLES = {
    r"^\+[1-9][0-9]{1,14}$": "+242066123456",
    r"^[0-9a-f]{64}$": "ab" * 32,
}

#: Nested values whose fields depend on each other.
OBJECT_SAMPLES = {"TransferTarget": {"kind": "number", "number": "+242066123456"}}


def sample_value(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A valid value for a JSON-schema property (enough to build every event)."""
    if "$ref" in schema:
        return sample_value(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return sample_value(next(o for o in schema["anyOf"] if o.get("type") != "null"), defs)
    if "examples" in schema:
        return schema["examples"][0]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "pattern" in schema:
        return PATTERN_SAMPLES[schema["pattern"]]
    formats = {"date-time": "2026-05-04T09:15:00Z", "time": "08:00:00"}
    if schema.get("format") in formats:
        return formats[schema["format"]]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        if schema.get("title") in OBJECT_SAMPLES:
            return OBJECT_SAMPLES[schema["title"]]
        # Optional fields too: a default or an optional type that cannot validate shows up.
        return {name: sample_value(p, defs) for name, p in schema["properties"].items()}
    if kind == "object":
        return {"k": "v"}
    simple = {"string": "x-1", "integer": max(1, schema.get("minimum", 1)), "number": 0.5}
    return {"array": [], "boolean": True, **simple}[kind]


def sample_data(cls: type[EventData]) -> dict[str, Any]:
    schema = cls.model_json_schema()
    return sample_value(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


def by_type(cls: type[EventData]) -> str:
    return f"{cls.event_type}-v{cls.schema_version}"


def test_the_catalogue_covers_every_context() -> None:
    assert {Topic(cls.topic) for cls in EVENTS} == set(Topic)
    assert len(EVENTS) >= 50
    for module in (calls, routing, agents, dialer, access):
        assert any(cls.__module__ == module.__name__ for cls in EVENTS), module.__name__


def test_design_flow_events_exist() -> None:
    # Names other services are written against (DESIGN §4 and the issues).
    for name in [
        "call.offered", "call.rejected", "call.queued", "call.agent_reserved",
        "call.agent_ringing", "call.connected", "call.ended", "call.abandoned",
        "call.requeued", "call.originated", "call.dial_refused", "call.dial_completed",
        "agent.not_responding", "agent.wrap_up_completed", "contact.allowed",
        "contact.withdrawn", "contact_list.imported", "access.denied",
    ]:  # fmt: skip
        assert lookup(name, 1).event_type == name


def test_model_names_are_unique() -> None:
    # The AsyncAPI components are keyed by model name; two equal names would collide.
    names = [cls.__name__ for cls in EVENTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("cls", EVENTS, ids=by_type)
def test_event_name_is_dotted_and_past_tense(cls: type[EventData]) -> None:
    assert NAME.match(cls.event_type), cls.event_type
    fact = cls.event_type.split(".", 1)[1].split("_")
    past = any(w.endswith("ed") or w in IRREGULAR_PAST for w in fact)
    assert past or cls.event_type in NOT_PAST_TENSE, f"{cls.event_type} is not past tense"


@pytest.mark.parametrize("cls", EVENTS, ids=by_type)
def test_event_is_documented(cls: type[EventData]) -> None:
    own_doc = cls.__dict__.get("__doc__") or ""
    first_line = own_doc.strip().splitlines()[0] if own_doc.strip() else ""
    assert first_line.endswith("."), f"{cls.__name__} needs its own one-line docstring"
    properties = cls.model_json_schema()["properties"]
    undocumented = [name for name, p in properties.items() if not p.get("description")]
    assert not undocumented, f"{cls.__name__} fields without description: {undocumented}"


@pytest.mark.parametrize("cls", EVENTS, ids=by_type)
def test_event_topic_and_stream(cls: type[EventData]) -> None:
    assert isinstance(cls.topic, Topic)
    assert issubclass(cls, StreamedEvent)
    assert "tenant" not in cls.model_fields, "the tenant belongs in the envelope"
    event = cls.model_validate(sample_data(cls))
    prefixes = [p.split("<", 1)[0] for p in cls.stream_pattern().split(" or ")]
    stream = event.stream_id("acme")
    assert any(stream.startswith(p) for p in prefixes)
    assert len(stream) > min(len(p) for p in prefixes)
    if cls.tenant_scoped:
        assert stream.startswith(tuple(f"{p}acme:" for p in prefixes))
        with pytest.raises(ValueError, match="pass the tenant"):
            event.stream_id()
    else:
        assert event.stream_id() == stream


@pytest.mark.parametrize("cls", EVENTS, ids=by_type)
def test_event_is_frozen(cls: type[EventData]) -> None:
    event = cls.model_validate(sample_data(cls))
    name = next(iter(cls.model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(event, name, getattr(event, name))


@pytest.mark.parametrize("cls", EVENTS, ids=by_type)
def test_event_rejects_extra_fields(cls: type[EventData]) -> None:
    data = sample_data(cls)
    with pytest.raises(ValidationError, match="extra"):
        cls.model_validate({**data, "tenant": "acme"})


@pytest.mark.parametrize("cls", EVENTS, ids=by_type)
def test_event_json_round_trip(cls: type[EventData]) -> None:
    event = cls.model_validate(sample_data(cls))
    assert cls.model_validate(event.model_dump(mode="json")) == event


def test_stream_ids_follow_the_content() -> None:
    with pytest.raises(ValidationError, match="names its queue_id"):
        routing.RoutingFailed(call_id="c1", reason=routing.RoutingFailure.UNKNOWN_DNIS)
    unknown = routing.RoutingFailed(
        call_id="c1", reason=routing.RoutingFailure.UNKNOWN_DNIS, dnis="+242053000199"
    )
    assert unknown.stream_id("mno") == "entrypoint-mno:+242053000199"
    queued = routing.RoutingFailed(
        call_id="c1", reason=routing.RoutingFailure.QUEUE_FULL, queue_id="q-support"
    )
    assert queued.stream_id("mno") == "queue-mno:q-support"
    login = access.LoginFailed(
        username="root", reason=access.LoginFailure.UNKNOWN_USER, source_ip="192.0.2.1",
        consecutive_failures=3,
    )  # fmt: skip
    assert login.stream_id() == "login-root"
    assert login.model_copy(update={"user_id": "u-1"}).stream_id() == "user-u-1"


def test_constrained_values_are_enforced() -> None:
    allowed = {"contact_id": "k1", "campaign_id": "c1", "list_version": 1}
    with pytest.raises(ValidationError):
        dialer.ContactAllowed(number="066123456", **allowed)  # not E.164
    assert dialer.ContactAllowed(number="+242066123456", **allowed).number == "+242066123456"
    with pytest.raises(ValidationError, match="timezone-aware"):
        dialer.DialScheduled(
            contact_id="k1", campaign_id="c1", attempt_number=1,
            not_before="2026-05-04T09:15:00", reason="first_attempt",
        )  # fmt: skip
    with pytest.raises(ValidationError):
        calls.CallRejected(
            call_id="c1", reason="no_such_reason", sip_code=503, source="192.0.2.1:5060"
        )
    with pytest.raises(ValidationError):
        calls.CallRejected(call_id="c1", reason="over_capacity", sip_code=200, source="x")
    assert calls.TransferTarget(kind="queue", queue_id="q-2").queue_id == "q-2"
    with pytest.raises(ValidationError, match="sets `agent` and nothing else"):
        calls.TransferTarget(kind="agent", queue_id="q-2")


def test_tenant_streams_keep_tenants_apart_and_split_back() -> None:
    queued = routing.CallQueued(queue_id="q-support", call_id="c1", direction="inbound", priority=0)
    assert queued.stream_id("mno") != queued.stream_id("mno-2")
    assert split_tenant_stream(queued.stream_id("mno.cg")) == ("queue", "mno.cg", "q-support")
    # Whatever the id holds, the tenant ends at the first separator.
    odd = agents.AgentLoggedIn(agent_id="a:1-2", extension="1001")
    assert split_tenant_stream(odd.stream_id("t-1")) == ("agent", "t-1", "a:1-2")
    with pytest.raises(ValueError, match="tenant id"):
        queued.stream_id("mno:cg")
    for not_scoped in ("call-3f2c", "queue-q-support", "queue-:q"):
        with pytest.raises(ValueError, match="not a tenant's stream"):
            split_tenant_stream(not_scoped)
