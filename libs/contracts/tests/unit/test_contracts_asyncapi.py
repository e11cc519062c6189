"""The generated event documents list every event type with its fields and descriptions."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import yaml

from plateau_contracts import catalogue
from plateau_contracts.asyncapi import asyncapi_yaml, envelope_model, events_markdown
from plateau_contracts.catalogue import all_events
from plateau_contracts.envelope import Envelope, EventData
from plateau_contracts.events.calls import CallEnded
from plateau_contracts.topics import Topic

pytestmark = pytest.mark.unit

EVENTS = list(all_events())


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(asyncapi_yaml())


def test_document_is_asyncapi_3_with_one_channel_per_topic(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert list(document["channels"]) == [t.value for t in Topic]
    for topic in Topic:
        channel = document["channels"][topic.value]
        assert channel["address"] == topic.value
        assert channel["bindings"]["kafka"]["topic"] == topic.value


def test_each_topic_message_lists_exactly_that_topics_events(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for topic in Topic:
        payload = schemas[f"{topic.value}:Message:Payload"]
        refs = [branch["$ref"].rsplit("/", 1)[-1] for branch in payload["oneOf"]]
        expected = [f"{c.__name__}Envelope" for c in EVENTS if c.topic == topic]
        assert sorted(refs) == sorted(expected)
        assert payload["discriminator"] == "type"


@pytest.mark.parametrize("cls", EVENTS, ids=lambda c: c.event_type)
def test_every_event_and_field_is_documented(
    document: dict[str, Any], cls: type[EventData]
) -> None:
    schemas = document["components"]["schemas"]
    wrapper = schemas[f"{cls.__name__}Envelope"]
    assert wrapper["properties"]["type"]["const"] == cls.event_type
    assert wrapper["properties"]["data"]["$ref"].endswith(f"/{cls.__name__}")
    assert set(Envelope.model_fields) <= set(wrapper["properties"])
    payload = schemas[cls.__name__]
    assert payload["description"].startswith(cls.__doc__.strip().splitlines()[0])
    for name, field in cls.model_fields.items():
        assert payload["properties"][name]["description"] == field.description


def test_documents_are_deterministic() -> None:
    assert asyncapi_yaml() == asyncapi_yaml()
    assert events_markdown() == events_markdown()


def test_markdown_has_a_row_per_event() -> None:
    text = events_markdown()
    for cls in EVENTS:
        assert f"| `{cls.event_type}` | {cls.schema_version} | `{cls.topic}` |" in text
        assert f"### `{cls.event_type}` v{cls.schema_version}" in text


def test_envelope_model_types_the_data() -> None:
    model = envelope_model(CallEnded)
    assert issubclass(model, Envelope)
    schema = model.model_json_schema()
    assert schema["properties"]["type"]["const"] == "call.ended"
    assert "cause" in schema["$defs"]["CallEnded"]["properties"]


def test_a_second_schema_version_is_documented_next_to_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catalogue, "_registry", dict(catalogue._registry))

    @catalogue.event
    class CallEndedV2(CallEnded):
        """The call is over (test-only second version)."""

        schema_version: ClassVar[int] = 2

    schemas = yaml.safe_load(asyncapi_yaml())["components"]["schemas"]
    payload = schemas["plateau.calls:Message:Payload"]
    # `type` alone no longer tells the branches apart; `schema_version` does.
    assert "discriminator" not in payload
    refs = {branch["$ref"].rsplit("/", 1)[-1] for branch in payload["anyOf"]}
    assert {"CallEndedEnvelope", "CallEndedV2Envelope"} <= refs
    assert schemas["CallEndedV2Envelope"]["properties"]["schema_version"]["const"] == 2
