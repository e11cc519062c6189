"""Documents of the event catalogue: the AsyncAPI 3.0 description and a Markdown table.

Both are built from the registered payload models, so the docs cannot drift from the code
(``python -m plateau_contracts.codegen --check`` fails when a committed copy is stale).
The AsyncAPI document comes from FastStream: a documentation-only Kafka broker with one
publisher per topic, whose message is the envelope with the typed ``data`` of each event
type of that topic (one ``oneOf`` branch per event type, discriminated by ``type``).
"""

from __future__ import annotations

import functools
import json
import operator
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import yaml
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import Field, create_model

from plateau_contracts.catalogue import all_events
from plateau_contracts.envelope import Envelope, EventData
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.topics import Topic

TITLE = "Plateau events"
#: Version of the event catalogue document; bump when event types are added or upcast.
CATALOGUE_VERSION = "1.0.0"

_TOPIC_DESCRIPTIONS = {
    Topic.CALLS: "Call legs and softphone registrations, recorded by the sip-gateway.",
    Topic.ROUTING: "Queueing and routing decisions and queue configuration, recorded by the acd.",
    Topic.AGENTS: "Agent sessions and states, recorded by the acd.",
    Topic.DIALER: "Campaigns, contact lists (the dial allow-list) and dials, by the dialer.",
    Topic.ACCESS: "Audit trail of client access (users, sessions, views), by the access-gateway.",
}

_BUS_DESCRIPTION = (
    "Kafka-protocol bus. The message key is the envelope's `stream`, so the events of one "
    "stream stay ordered in one partition. Delivery is at least once: consumers deduplicate "
    "on `event_id` or `(stream, stream_version)`. The tenant is in the envelope, never "
    "repeated in `data`."
)


def events_by_topic() -> dict[Topic, list[type[StreamedEvent]]]:
    """Every registered event, grouped by topic in topic order, each group sorted by type."""
    grouped: dict[Topic, list[type[StreamedEvent]]] = {topic: [] for topic in Topic}
    for cls in all_events():
        if not issubclass(cls, StreamedEvent):
            raise TypeError(f"{cls.__name__} must derive from StreamedEvent to name its stream")
        grouped[Topic(cls.topic)].append(cls)
    return {topic: classes for topic, classes in grouped.items() if classes}


def summary(cls: type[EventData]) -> str:
    """First line of an event's docstring: what the fact means."""
    lines = (cls.__doc__ or "").strip().splitlines()
    if not lines:
        raise TypeError(f"{cls.__name__} needs a docstring saying what the fact means")
    return lines[0]


def envelope_model(cls: type[EventData]) -> type[Envelope]:
    """The envelope as it travels with this event type: `type` fixed, `data` typed."""
    fields: dict[str, Any] = {
        "type": (
            Literal[cls.event_type],
            Field(description=f"Always `{cls.event_type}` for this message."),
        ),
        "schema_version": (
            Literal[cls.schema_version],
            Field(description="Version of the `data` schema."),
        ),
        "data": (cls, Field(description=summary(cls))),
    }
    model: type[Envelope] = create_model(
        f"{cls.__name__}Envelope",
        __base__=Envelope,
        __doc__=f"Envelope of `{cls.event_type}` v{cls.schema_version}: {summary(cls)}",
        **fields,
    )
    return model


def _message_schema(classes: Sequence[type[EventData]]) -> Any:
    envelopes = [envelope_model(cls) for cls in classes]
    if len(envelopes) == 1:
        return envelopes[0]
    union = functools.reduce(operator.or_, envelopes)
    if len({cls.event_type for cls in classes}) < len(classes):
        # Several schema versions of one type: `type` alone no longer picks the branch.
        return union
    # One branch per event type; `type` tells a reader which branch it has.
    return Annotated[union, Field(discriminator="type")]


def build_broker() -> KafkaBroker:
    """A documentation-only broker: it is never connected, it only carries the schema."""
    broker = KafkaBroker(
        "localhost:9092",
        description=_BUS_DESCRIPTION,
        specification_url="kafka-bootstrap:9092",
    )
    for topic, classes in events_by_topic().items():
        broker.publisher(
            topic.value,
            title=topic.value,
            description=_TOPIC_DESCRIPTIONS[topic],
            schema=_message_schema(classes),
        )
    return broker


def build_asyncapi() -> AsyncAPI:
    """The AsyncAPI 3.0 specification factory of the whole catalogue."""
    return AsyncAPI(
        build_broker(),
        title=TITLE,
        version=CATALOGUE_VERSION,
        description=(
            "Every fact Plateau's services record, as published on the event bus. "
            "Each message is an event envelope whose `data` is typed by its `type`."
        ),
        schema_version="3.0.0",
    )


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI document as plain data, in a stable order."""
    document: dict[str, Any] = build_asyncapi().to_specification().to_jsonable()
    # FastStream keeps publishers in a WeakSet, so channels come out in memory-address
    # order; put them in topic order and the components in name order, for stable diffs.
    rank = {topic.value: i for i, topic in enumerate(Topic)}
    for section in ("channels", "operations"):
        document[section] = dict(
            sorted(document[section].items(), key=lambda item: rank.get(item[0], len(rank)))
        )
    components = document.get("components", {})
    for section in ("messages", "schemas"):
        if section in components:
            components[section] = dict(sorted(components[section].items()))
    return document


def asyncapi_yaml() -> str:
    """The AsyncAPI document as YAML, byte-for-byte the same on every run."""
    return yaml.safe_dump(
        asyncapi_document(), sort_keys=False, allow_unicode=True, width=100, indent=2
    )


# -- Markdown catalogue -----------------------------------------------------------------


def events_markdown() -> str:
    """The human-readable catalogue: a summary table, then each event's fields."""
    grouped = events_by_topic()
    lines = [
        "# Event catalogue",
        "",
        "<!-- Generated by `python -m plateau_contracts.codegen`; do not edit by hand. -->",
        "",
        "Every event travels in the envelope `plateau_contracts.envelope.Envelope` "
        "(`event_id`, `type`, `schema_version`, `stream`, `stream_version`, `tenant`, "
        "`occurred_at`, `recorded_at`, `correlation_id`, `causation_id`, `traceparent`, "
        "`data`). The "
        "tables below describe `data`. The Kafka message key is the stream id. The machine-"
        "readable form is `docs/asyncapi.yaml`.",
        "",
        "| type | v | topic | stream | meaning |",
        "|---|---|---|---|---|",
    ]
    for topic, classes in grouped.items():
        lines.extend(
            f"| `{cls.event_type}` | {cls.schema_version} | `{topic.value}` "
            f"| {_stream_cell(cls)} | {_cell(summary(cls))} |"
            for cls in classes
        )
    nested: dict[str, dict[str, Any]] = {}
    for topic, classes in grouped.items():
        lines += ["", f"## `{topic.value}`"]
        for module in sorted({cls.__module__ for cls in classes}):
            lines += ["", _markdown_text(sys.modules[module].__doc__ or "")]
        for cls in classes:
            schema = cls.model_json_schema()
            defs = schema.get("$defs", {})
            nested.update({k: v for k, v in defs.items() if v.get("type") == "object"})
            lines += [
                "",
                f"### `{cls.event_type}` v{cls.schema_version}",
                "",
                f"{_cell(summary(cls))} Stream {_stream_cell(cls)}; model `{cls.__name__}`.",
                "",
                *_field_table(schema, defs),
            ]
    if nested:
        lines += ["", "## Nested types"]
        for name in sorted(nested):
            schema = nested[name]
            lines += [
                "",
                f"### `{name}`",
                "",
                _cell(schema.get("description", "")),
                "",
                *_field_table(schema, {}),
            ]
    return "\n".join(lines) + "\n"


def _field_table(schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return ["No fields besides the stream key."]
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        description = prop.get("description", "")
        if "examples" in prop:
            shown = [e if isinstance(e, str) else json.dumps(e) for e in prop["examples"][:2]]
            description += " Example: " + ", ".join(f"`{e}`" for e in shown) + "."
        rows.append(
            f"| `{name}` | {_cell(_type_of(prop, defs))} | {'yes' if name in required else 'no'} "
            f"| {_cell(description)} |"
        )
    return rows


def _type_of(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short readable type for a JSON schema property."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        return _enum_text(target["enum"]) if "enum" in target else f"`{name}`"
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        text = " or ".join(_type_of(o, defs) for o in options)
        return text + " or null" if len(options) < len(prop["anyOf"]) else text
    kind = str(prop.get("type", "any"))
    if "const" in prop:
        text = f"`{prop['const']}`"
    elif "enum" in prop:
        text = _enum_text(prop["enum"])
    elif kind == "array":
        text = "list of " + _type_of(prop.get("items", {}), defs)
    elif kind == "object" and "additionalProperties" in prop:
        text = "map of string to " + _type_of(prop["additionalProperties"], defs)
    elif "format" in prop:
        text = f"{kind} ({prop['format']})"
    elif "pattern" in prop:
        text = f"{kind} matching `{prop['pattern']}`"
    else:
        text = kind
    return text


def _enum_text(values: list[Any]) -> str:
    return "one of " + ", ".join(f"`{v}`" for v in values)


def _cell(text: str) -> str:
    # One line, no stray column separator, Markdown literals instead of reST ones.
    return " ".join(text.split()).replace("|", "\\|").replace("``", "`")


def _stream_cell(cls: type[StreamedEvent]) -> str:
    return " or ".join(f"`{pattern}`" for pattern in cls.stream_pattern().split(" or "))


def _markdown_text(docstring: str) -> str:
    # Module docstrings use reStructuredText literals; Markdown wants single backticks.
    text = "\n".join(line.strip() for line in docstring.strip().splitlines())
    return text.replace("``", "`")
