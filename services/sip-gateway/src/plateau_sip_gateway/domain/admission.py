"""Admission control: at most a trunk's capacity of calls at once, refused with 503 beyond.

Each admitted call holds an ``AdmissionToken`` until it ends, whatever way it ends; the
call's owner releases the token exactly where the call's ``call.ended`` (or its refusal)
is recorded. Releasing is idempotent (a second release of the same token, or a token of
a trunk since removed, does nothing), so a cleanup path that runs twice can never free a
slot another call holds; the count is the number of distinct tokens not yet released, so
it never goes negative and returns to 0 when every call is gone.

Over capacity, the INVITE is answered **503 Service Unavailable** with ``Retry-After``
(the trunk's ``retry_after_s``) and recorded as ``call.rejected`` ``over_capacity``: 503
tells the carrier to use another route now and this one again after the delay (RFC 3261
§21.5.4), which 486 Busy Here or 480 would not.

Lowering a trunk's capacity below its current count keeps the calls in progress and
refuses new ones until enough have ended. The counters are live, not event-sourced: after
a gateway restart every open call is closed (``gateway_restart``), so they start at 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from plateau_contracts.events.calls import RejectReason
from plateau_sip_gateway.domain.trunks import InboundRefused, TrunkConfig

OVER_CAPACITY_CODE = 503


@dataclass(frozen=True)
class TrunkLimit:
    """How many calls a trunk admits, and the Retry-After sent when it is full."""

    max_calls: int
    retry_after_s: int = 10

    def __post_init__(self) -> None:
        if self.max_calls < 0:
            raise ValueError(f"max_calls must be 0 or more, not {self.max_calls}")
        if self.retry_after_s < 1:
            raise ValueError(f"retry_after_s must be at least 1, not {self.retry_after_s}")


@dataclass(frozen=True)
class AdmissionToken:
    """Proof that one call holds one slot of a trunk; give it back with ``release``."""

    trunk: str
    serial: int


class UnknownTrunkError(LookupError):
    """Admission was asked about a trunk it has no limit for."""


class Admission:
    """Per-trunk concurrent-call counters (not thread-safe: one event loop owns it)."""

    def __init__(self, limits: Mapping[str, TrunkLimit]) -> None:
        self._limits = dict(limits)
        self._held: dict[str, set[int]] = {trunk: set() for trunk in self._limits}
        self._serials = itertools.count(1)

    @classmethod
    def for_trunks(cls, trunks: Iterable[TrunkConfig]) -> Admission:
        """Admission with each configured trunk's capacity and Retry-After."""
        return cls(
            {trunk.name: TrunkLimit(trunk.max_calls, trunk.retry_after_s) for trunk in trunks}
        )

    def admit(self, trunk: str) -> AdmissionToken | InboundRefused:
        """A slot on ``trunk`` for a new call, or the 503 refusal when it is full."""
        limit = self._limit(trunk)
        held = self._held[trunk]
        if len(held) >= limit.max_calls:
            return InboundRefused(
                RejectReason.OVER_CAPACITY,
                OVER_CAPACITY_CODE,
                f"trunk {trunk} at {len(held)}/{limit.max_calls} calls",
                trunk=trunk,
                retry_after_s=limit.retry_after_s,
            )
        token = AdmissionToken(trunk, next(self._serials))
        held.add(token.serial)
        return token

    def release(self, token: AdmissionToken) -> bool:
        """Give a slot back; ``False`` when it was already given back (nothing changes)."""
        held = self._held.get(token.trunk)
        if held is None or token.serial not in held:
            return False
        held.remove(token.serial)
        return True

    def in_use(self, trunk: str) -> int:
        """Calls currently holding a slot on ``trunk``."""
        self._limit(trunk)
        return len(self._held[trunk])

    def capacity(self, trunk: str) -> int:
        """Calls ``trunk`` admits at once."""
        return self._limit(trunk).max_calls

    def reconfigure(self, limits: Mapping[str, TrunkLimit]) -> None:
        """Apply new limits; calls in progress keep their slots, removed trunks are dropped.

        A call of a removed trunk can still be released (it does nothing).
        """
        self._held = {trunk: self._held.get(trunk, set()) for trunk in limits}
        self._limits = dict(limits)

    def _limit(self, trunk: str) -> TrunkLimit:
        try:
            return self._limits[trunk]
        except KeyError:
            raise UnknownTrunkError(
                f"no admission limit for trunk {trunk!r}: is it in the trunk configuration?"
            ) from None
