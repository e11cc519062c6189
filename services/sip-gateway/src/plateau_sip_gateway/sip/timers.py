"""SIP transaction timers (RFC 3261 §17, Table 4) and the scheduler port they run on.

Every duration derives from T1 (round-trip estimate), T2 (longest retransmit interval for
non-INVITE requests and INVITE responses) and T4 (how long a message may live in the
network). Over a reliable transport (TCP) nothing is retransmitted and the "wait for
retransmissions" timers D, I, J and K are zero.

Timers L and M come from RFC 6026, which fixes the handling of 2xx responses to INVITE:
the transactions linger in an ``Accepted`` state for 64*T1 so that INVITE retransmissions
are absorbed instead of creating a second call, and 2xx retransmissions reach the TU.

The transactions never touch the event loop directly: they ask a ``Scheduler`` for the
time and for callbacks, so unit tests run them in virtual time (``VirtualScheduler``)
while the endpoint uses the running loop (``LoopScheduler``).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The clock port: what time it is, and calling something back after a delay."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` once, ``delay`` seconds from now."""
        ...


class LoopScheduler:
    """The scheduler of a real asyncio event loop (monotonic ``loop.time()``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        # In a context of its own, not a copy of the caller's: a transaction's timers run
        # for up to 64*T1, and a copy would keep what the caller's context holds (the
        # gRPC call's span and response, for an agent leg) alive as long.
        return self._loop.call_later(delay, callback, context=contextvars.Context())


class _VirtualTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualScheduler:
    """A scheduler whose time moves only when told to: deterministic tests, no sleeping.

    ``advance(seconds)`` fires every callback that falls due, in order, each seeing
    ``now()`` equal to its own due time; callbacks may schedule further callbacks.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _VirtualTimer]] = []
        self._sequence = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _VirtualTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._heap, (timer.when, next(self._sequence), timer))
        return timer

    @property
    def pending(self) -> int:
        """Callbacks scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def next_due(self) -> float | None:
        """When the next live callback falls due (None when nothing is scheduled)."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing what falls due on the way."""
        self.advance_to(self._now + seconds)

    def advance_to(self, moment: float) -> None:
        """Move time forward to ``moment``, firing what falls due on the way."""
        while True:
            due = self.next_due()
            if due is None or due > moment + 1e-9:
                break
            _, _, timer = heapq.heappop(self._heap)
            self._now = max(self._now, timer.when)
            timer.callback()
        self._now = max(self._now, moment)

    def run_until_idle(self, limit: float = 3600.0) -> None:
        """Fire everything scheduled, however far ahead, up to ``limit`` seconds from now."""
        self.advance(limit)


@dataclass(frozen=True)
class TimerSettings:
    """T1, T2 and T4 and what derives from them (RFC 3261 §17.1.1.1, Table 4).

    ``trying_delay``: how long an INVITE server transaction waits for the TU's own
    provisional response before sending ``100 Trying`` itself (RFC 3261 §17.2.1 asks for
    one within 200 ms unless the TU is known to answer sooner). The default 0 sends it at
    once: the gateway's TU does I/O before it rings, so it cannot promise 200 ms, and an
    early 100 stops the caller's INVITE retransmissions as soon as possible.

    ``timer_d``: how long an INVITE client transaction absorbs retransmitted final
    responses over UDP; the RFC asks for at least 32 s whatever T1 is.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError(f"T1 must be positive and at most T2 (T1={self.t1}, T2={self.t2})")
        if self.t4 <= 0 or self.timer_d < 0 or not 0 <= self.trying_delay <= 0.2:
            raise ValueError(
                "T4 must be positive, Timer D not negative and the 100 Trying delay "
                "within 0-0.2 s (RFC 3261 §17.2.1)"
            )

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, L, M and J (over UDP)."""
        return 64 * self.t1

    # INVITE client --------------------------------------------------------------------

    def timer_a(self, reliable: bool) -> float | None:
        """First INVITE retransmission interval (doubles each time); None over TCP."""
        return None if reliable else self.t1

    @property
    def timer_b(self) -> float:
        """INVITE client gives up waiting for any response."""
        return self.transaction_timeout

    def timer_d_for(self, reliable: bool) -> float:
        """INVITE client absorbs retransmitted non-2xx finals (0 over TCP)."""
        return 0.0 if reliable else self.timer_d

    # non-INVITE client -------------------------------------------------------------------

    def timer_e(self, reliable: bool) -> float | None:
        """First non-INVITE retransmission interval (doubles up to T2); None over TCP."""
        return None if reliable else self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client gives up waiting for a final response."""
        return self.transaction_timeout

    def timer_k(self, reliable: bool) -> float:
        """Non-INVITE client absorbs retransmitted finals (0 over TCP)."""
        return 0.0 if reliable else self.t4

    # INVITE server -----------------------------------------------------------------------

    def timer_g(self, reliable: bool) -> float | None:
        """First retransmission of a non-2xx final (doubles up to T2); None over TCP."""
        return None if reliable else self.t1

    @property
    def timer_h(self) -> float:
        """INVITE server gives up waiting for the ACK of its non-2xx final."""
        return self.transaction_timeout

    def timer_i(self, reliable: bool) -> float:
        """INVITE server absorbs retransmitted ACKs (0 over TCP)."""
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        """RFC 6026: INVITE server absorbs INVITE retransmissions after a 2xx."""
        return self.transaction_timeout

    # non-INVITE server -------------------------------------------------------------------

    def timer_j(self, reliable: bool) -> float:
        """Non-INVITE server absorbs request retransmissions (0 over TCP)."""
        return 0.0 if reliable else self.transaction_timeout

    @property
    def timer_m(self) -> float:
        """RFC 6026: INVITE client passes 2xx retransmissions to the TU."""
        return self.transaction_timeout

    def next_interval(self, interval: float, *, capped: bool) -> float:
        """The retransmission interval after ``interval``: doubled, and at most T2 when
        ``capped`` (E and G are capped; A is not, Timer B ends it)."""
        doubled = interval * 2
        return min(doubled, self.t2) if capped else doubled
