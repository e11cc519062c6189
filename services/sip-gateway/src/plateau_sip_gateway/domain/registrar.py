"""Where agents' softphones can be reached: bindings of extensions to contacts (RFC 3261 §10).

``Registrar.register(request, now)`` applies one authenticated REGISTER, all or nothing,
following §10.3 steps 6-8:

* ``Contact: *`` with ``Expires: 0`` (and nothing else) removes every binding; any other
  use of ``*`` is refused with 400;
* no Contact at all is a fetch: the current bindings, unchanged;
* each contact's lifetime is its ``expires`` parameter, else the Expires header, else
  ``default_expires``; a non-zero lifetime under ``min_expires`` is refused with 423 (the
  caller adds Min-Expires), one over ``max_expires`` is shortened; 0 removes the binding;
* a contact already bound with the same Call-ID and a CSeq not higher than the stored
  one is out of order: the whole request fails with 500 (§10.3 step 7 says "aborted"
  and leaves the code open; 500 is what a client retries later, not a verdict);
* at most ``max_contacts`` bindings per extension: a REGISTER that alone brings more is
  refused with 403; otherwise the least recently refreshed bindings it did not mention
  are dropped to make room (a softphone that restarted on a new port replaces itself).

Events (``plateau_contracts.events.calls``): ``ExtensionRegistered`` for every contact
added or refreshed; ``ExtensionUnregistered`` when an extension goes from at least one
live binding to none, ``reason="unregistered"`` when a REGISTER removed them and
``"expired"`` when their lifetimes lapsed (found by ``sweep`` or by the next REGISTER,
whichever comes first). The contract's event names the extension, not a contact, and
means "calls to it cannot ring", so it is emitted once per lapse of the whole extension,
never for one contact among several.

Pure: ``now`` is passed in (seconds); contacts are compared with the injected
``same_contact`` (the SIP layer passes RFC 3261 §19.1.4 URI equivalence).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from plateau_contracts.events.calls import (
    ExtensionEvent,
    ExtensionRegistered,
    ExtensionUnregistered,
)

UnregisterReason = Literal["unregistered", "expired", "gateway_restart"]


@dataclass(frozen=True)
class RegistrarPolicy:
    """Limits of the registrar (seconds; ``max_contacts`` per extension)."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if self.max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")


@dataclass(frozen=True)
class ContactRequest:
    """One Contact of a REGISTER: its URI and its own ``expires`` and ``q``, if any."""

    uri: str
    expires: int | None = None
    q: float | None = None


@dataclass(frozen=True)
class RegisterRequest:
    """An authenticated REGISTER for the extension ``aor``, reduced to what §10.3 uses.

    ``source``/``transport``: where it came from (how to reach a softphone behind NAT).
    """

    aor: str
    call_id: str
    cseq: int
    contacts: tuple[ContactRequest, ...] = ()
    wildcard: bool = False
    expires: int | None = None
    user_agent: str | None = None
    source: tuple[str, int] | None = None
    transport: str = "UDP"
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Binding:
    """One contact bound to an extension until ``expires_at``.

    ``path``: the proxies the REGISTER came through (RFC 3327 Path, ``<uri>`` each, the
    softphone's nearest last): requests to the contact go to the first, with the whole
    Path as their Route set. Empty when the softphone registered directly.
    """

    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    updated_at: float
    q: float | None = None
    user_agent: str | None = None
    source: tuple[str, int] | None = None
    transport: str = "UDP"
    path: tuple[str, ...] = ()

    def live(self, now: float) -> bool:
        return self.expires_at > now

    def expires_in(self, now: float) -> int:
        """Whole seconds left (rounded up, so a live binding never shows 0)."""
        return max(0, math.ceil(self.expires_at - now))


@dataclass(frozen=True)
class Registered:
    """The REGISTER was applied: the bindings now in force and the facts to record."""

    bindings: tuple[Binding, ...]
    events: tuple[ExtensionEvent, ...] = ()


@dataclass(frozen=True)
class RegisterRefused:
    """The REGISTER was refused with ``status``; nothing changed except lapsed bindings
    found on the way (reported in ``events``)."""

    status: int
    reason: str
    min_expires: int | None = None
    events: tuple[ExtensionEvent, ...] = ()


RegisterResult = Registered | RegisterRefused


class _Refused(Exception):
    def __init__(self, status: int, reason: str, min_expires: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.min_expires = status, reason, min_expires


class Registrar:
    """The bindings of every extension (one instance per gateway process)."""

    def __init__(
        self,
        policy: RegistrarPolicy | None = None,
        *,
        same_contact: Callable[[str, str], bool] = operator.eq,
    ) -> None:
        self.policy = policy or RegistrarPolicy()
        self._same = same_contact
        self._bindings: dict[str, tuple[Binding, ...]] = {}
        # Extensions by the address their bindings registered from: which requests come
        # from a softphone is asked on every INVITE, and must not scan every extension.
        self._by_source: dict[tuple[str, int], set[str]] = {}

    # queries -----------------------------------------------------------------------

    def lookup(self, aor: str, now: float) -> tuple[Binding, ...]:
        """The live bindings of ``aor``, preferred first (highest q, then most recent)."""
        live = [b for b in self._bindings.get(aor, ()) if b.live(now)]
        live.sort(key=lambda b: (-(1.0 if b.q is None else b.q), -b.updated_at))
        return tuple(live)

    def bound_from(self, source: tuple[str, int], now: float) -> bool:
        """Whether a live binding registered from ``source`` (a softphone's address)."""
        for aor in self._by_source.get(source, ()):
            for binding in self._bindings.get(aor, ()):
                if binding.source == source and binding.live(now):
                    return True
        return False

    def extensions(self) -> tuple[str, ...]:
        """Extensions holding bindings (some possibly lapsed until the next sweep)."""
        return tuple(self._bindings)

    def next_expiry(self) -> float | None:
        """When the next binding lapses: when ``sweep`` next has something to do."""
        return min(
            (b.expires_at for bindings in self._bindings.values() for b in bindings),
            default=None,
        )

    # commands ----------------------------------------------------------------------

    def register(self, request: RegisterRequest, now: float) -> RegisterResult:
        """Apply ``request`` (already authenticated and authorized for ``request.aor``)."""
        lapse_events = self._expire(request.aor, now)
        before = self._bindings.get(request.aor, ())
        try:
            after, touched = self._apply(request, before, now)
        except _Refused as refused:
            return RegisterRefused(
                refused.status, refused.reason, refused.min_expires, tuple(lapse_events)
            )
        events: list[ExtensionEvent] = list(lapse_events)
        for binding in touched:
            events.append(
                ExtensionRegistered(
                    extension=request.aor,
                    contact=binding.contact,
                    expires_s=binding.expires_in(now),
                    user_agent=binding.user_agent,
                )
            )
        if before and not after:
            events.append(ExtensionUnregistered(extension=request.aor, reason="unregistered"))
        self._set(request.aor, after)
        return Registered(self.lookup(request.aor, now), tuple(events))

    def sweep(self, now: float) -> list[ExtensionUnregistered]:
        """Drop lapsed bindings; one ``expired`` event per extension left with none."""
        events: list[ExtensionUnregistered] = []
        for aor in list(self._bindings):
            events.extend(self._expire(aor, now))
        return events

    def unregister_all(self, reason: UnregisterReason) -> list[ExtensionUnregistered]:
        """Drop every binding (shutdown, or closing what a previous process left open)."""
        events = [ExtensionUnregistered(extension=aor, reason=reason) for aor in self._bindings]
        self._bindings.clear()
        self._by_source.clear()
        return events

    # internals ---------------------------------------------------------------------

    def _expire(self, aor: str, now: float) -> list[ExtensionUnregistered]:
        bindings = self._bindings.get(aor)
        if bindings is None:
            return []
        live = tuple(b for b in bindings if b.live(now))
        if live:
            if len(live) != len(bindings):
                self._set(aor, live)
            return []
        self._set(aor, ())
        return [ExtensionUnregistered(extension=aor, reason="expired")]

    def _set(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        """Replace the bindings of ``aor`` (none: forget it), keeping the source index."""
        for old in self._bindings.get(aor, ()):
            if old.source is not None:
                aors = self._by_source.get(old.source)
                if aors is not None:
                    aors.discard(aor)
                    if not aors:
                        del self._by_source[old.source]
        if bindings:
            self._bindings[aor] = bindings
            for new in bindings:
                if new.source is not None:
                    self._by_source.setdefault(new.source, set()).add(aor)
        else:
            self._bindings.pop(aor, None)

    def _apply(
        self, request: RegisterRequest, before: tuple[Binding, ...], now: float
    ) -> tuple[tuple[Binding, ...], list[Binding]]:
        if request.wildcard:
            if request.contacts or request.expires != 0:
                raise _Refused(400, "Contact: * needs Expires: 0 and no other Contact")
            for binding in before:
                self._check_order(binding, request)
            return (), []
        working = list(before)
        touched: list[Binding] = []
        for contact in request.contacts:
            expires = self._lifetime(contact, request)
            index = next(
                (i for i, b in enumerate(working) if self._same(b.contact, contact.uri)), None
            )
            if index is not None:
                self._check_order(working[index], request)
                del working[index]
            touched = [b for b in touched if not self._same(b.contact, contact.uri)]
            if expires == 0:
                continue
            binding = Binding(
                aor=request.aor,
                contact=contact.uri,
                expires_at=now + expires,
                call_id=request.call_id,
                cseq=request.cseq,
                updated_at=now,
                q=contact.q,
                user_agent=request.user_agent,
                source=request.source,
                transport=request.transport,
                path=request.path,
            )
            working.append(binding)
            touched.append(binding)
        limit = self.policy.max_contacts
        if len(touched) > limit:
            raise _Refused(403, f"at most {limit} contacts per extension")
        if len(working) > limit:
            keep = {id(b) for b in touched}
            untouched = sorted((b for b in working if id(b) not in keep), key=_age)
            drop = {id(b) for b in untouched[: len(working) - limit]}
            working = [b for b in working if id(b) not in drop]
        return tuple(working), touched

    def _lifetime(self, contact: ContactRequest, request: RegisterRequest) -> int:
        policy = self.policy
        if contact.expires is not None:
            expires = contact.expires
        elif request.expires is not None:
            expires = request.expires
        else:
            expires = policy.default_expires
        if 0 < expires < policy.min_expires:
            raise _Refused(423, "registration interval too brief", policy.min_expires)
        return min(expires, policy.max_expires)

    @staticmethod
    def _check_order(binding: Binding, request: RegisterRequest) -> None:
        if binding.call_id == request.call_id and request.cseq <= binding.cseq:
            raise _Refused(500, "REGISTER out of order (CSeq not above the last one)")


def _age(binding: Binding) -> float:
    return binding.updated_at


__all__ = [
    "Binding",
    "ContactRequest",
    "RegisterRefused",
    "RegisterRequest",
    "RegisterResult",
    "Registered",
    "Registrar",
    "RegistrarPolicy",
    "UnregisterReason",
]
