"""Several gateway replicas: the bindings the others hold, and who answers for a call.

A softphone registers on one replica (the dispatcher hashes its Call-ID) while the call
that must ring it may be held by another. Each replica keeps its own ``Registrar`` and a
``PeerBindings`` mirror of everyone else's; ``SharedBindings`` answers the synchronous
questions of the B2BUA and the SIP entry point (``lookup``, ``bound_from``) over both.

Bindings travel between replicas as JSON objects of every field of ``Binding``
(``binding_to_json`` / ``binding_from_json``): a field added to ``Binding`` later travels
without changing this module, and one a newer replica wrote that this one does not know
is ignored.

Pure: no I/O; ``now`` is passed in (seconds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from plateau_sip_gateway.domain.registrar import Binding, Registrar

_BINDING_FIELDS = {f.name: f for f in dataclasses.fields(Binding)}


def binding_to_json(binding: Binding) -> dict[str, Any]:
    """Every field of ``binding`` as JSON values (tuples become lists)."""
    return {name: _to_json(getattr(binding, name)) for name in _BINDING_FIELDS}


def binding_from_json(data: Mapping[str, Any]) -> Binding:
    """The ``Binding`` that ``binding_to_json`` wrote; unknown keys are ignored, missing
    optional ones take their default. ValueError when a required field is missing."""
    known = {name: _from_json(value) for name, value in data.items() if name in _BINDING_FIELDS}
    try:
        return Binding(**known)
    except TypeError as exc:
        raise ValueError(f"not a stored binding: {exc}") from None


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    # Binding's sequences are tuples (frozen, hashable): JSON gives lists back.
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


class PeerBindings:
    """The bindings other replicas hold, by replica and extension (a mirror, replaced
    whole per ``(replica, extension)`` each time a change is heard of)."""

    def __init__(self, replica: str) -> None:
        self.replica = replica  # this replica: its own rows are never mirrored
        self._by_aor: dict[str, dict[str, tuple[Binding, ...]]] = {}
        self._by_source: dict[tuple[str, int], set[str]] = {}

    def replace(self, aor: str, held: Mapping[str, Iterable[Binding]]) -> None:
        """The bindings of ``aor`` now, by the replica holding them (all replicas' rows
        for that extension; this replica's own are skipped)."""
        self._unindex(aor)
        every = {replica: tuple(bindings) for replica, bindings in held.items()}
        kept = {r: bindings for r, bindings in every.items() if r != self.replica and bindings}
        if not kept:
            self._by_aor.pop(aor, None)
            return
        self._by_aor[aor] = kept
        for bindings in kept.values():
            for binding in bindings:
                if binding.source is not None:
                    self._by_source.setdefault(binding.source, set()).add(aor)

    def load(self, rows: Iterable[tuple[str, Binding]]) -> None:
        """Replace the whole mirror with ``(replica, binding)`` rows (start, resync)."""
        grouped: dict[str, dict[str, list[Binding]]] = {}
        for replica, binding in rows:
            grouped.setdefault(binding.aor, {}).setdefault(replica, []).append(binding)
        self._by_aor.clear()
        self._by_source.clear()
        for aor, held in grouped.items():
            self.replace(aor, held)

    def lookup(self, aor: str, now: float) -> tuple[Binding, ...]:
        """The live bindings of ``aor`` that other replicas hold (unordered)."""
        return tuple(
            b for bindings in self._by_aor.get(aor, {}).values() for b in bindings if b.live(now)
        )

    def bound_from(self, source: tuple[str, int], now: float) -> bool:
        """Whether another replica holds a live binding registered from ``source``."""
        for aor in self._by_source.get(source, ()):
            for bindings in self._by_aor.get(aor, {}).values():
                if any(b.source == source and b.live(now) for b in bindings):
                    return True
        return False

    def extensions(self) -> tuple[str, ...]:
        return tuple(self._by_aor)

    def _unindex(self, aor: str) -> None:
        for bindings in self._by_aor.get(aor, {}).values():
            for binding in bindings:
                if binding.source is None:
                    continue
                aors = self._by_source.get(binding.source)
                if aors is not None:
                    aors.discard(aor)
                    if not aors:
                        del self._by_source[binding.source]


class SharedBindings:
    """Where an extension can be rung, over this replica's registrar and its peers'."""

    def __init__(self, local: Registrar, peers: PeerBindings | None = None) -> None:
        self.local = local
        self.peers = peers

    def lookup(self, aor: str, now: float) -> tuple[Binding, ...]:
        """Live bindings of ``aor`` held by any replica, preferred first (highest q, then
        most recent), as ``Registrar.lookup`` orders them."""
        found = self.local.lookup(aor, now)
        if self.peers is None:
            return found
        remote = self.peers.lookup(aor, now)
        if not remote:
            return found
        merged = [*found, *remote]
        merged.sort(key=lambda b: (-(1.0 if b.q is None else b.q), -b.updated_at))
        return tuple(merged)

    def bound_from(self, source: tuple[str, int], now: float) -> bool:
        """Whether any replica holds a live binding registered from ``source``."""
        if self.local.bound_from(source, now):
            return True
        return self.peers is not None and self.peers.bound_from(source, now)


__all__ = ["PeerBindings", "SharedBindings", "binding_from_json", "binding_to_json"]
