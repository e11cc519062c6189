"""The event catalogue: maps ``(type, schema_version)`` to the typed payload model.

Every event module registers its classes here on import, so ``parse`` can turn any
envelope read from a store or the bus back into its typed payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from plateau_contracts.envelope import Envelope, EventData

E = TypeVar("E", bound=type[EventData])

_registry: dict[tuple[str, int], type[EventData]] = {}
#: Upcasters turn a stored payload of an old schema version into the next version's shape.
_upcasters: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class UnknownEventError(LookupError):
    """An envelope names an event type or schema version this build does not know."""


def event(cls: E) -> E:
    """Class decorator that registers an event payload model in the catalogue."""
    key = (cls.event_type, cls.schema_version)
    if key in _registry and _registry[key] is not cls:
        raise ValueError(f"event {key} registered twice")
    _registry[key] = cls
    return cls


def upcaster(
    event_type: str, from_version: int
) -> Callable[
    [Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]
]:
    """Register a function that lifts ``event_type`` data from ``from_version`` to the next."""

    def register(
        fn: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _upcasters[(event_type, from_version)] = fn
        return fn

    return register


def lookup(event_type: str, schema_version: int) -> type[EventData]:
    """The payload model of an event type and version."""
    _load_all()
    try:
        return _registry[(event_type, schema_version)]
    except KeyError:
        raise UnknownEventError(
            f"unknown event {event_type!r} v{schema_version}: upgrade this service or "
            "register an upcaster"
        ) from None


def parse(envelope: Envelope) -> EventData:
    """The typed payload of an envelope, upcast to the newest schema version known."""
    _load_all()
    data, version = dict(envelope.data), envelope.schema_version
    while (envelope.type, version) not in _registry or (envelope.type, version + 1) in _registry:
        step = _upcasters.get((envelope.type, version))
        if step is None:
            break
        data, version = step(data), version + 1
    return lookup(envelope.type, version).model_validate(data)


def all_events() -> Iterator[type[EventData]]:
    """Every registered payload model, sorted by type then version."""
    _load_all()
    for key in sorted(_registry):
        yield _registry[key]


def _load_all() -> None:
    # Importing the package registers every module's events exactly once.
    import plateau_contracts.events  # noqa: F401
