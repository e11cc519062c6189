"""The acd's application layer: triggers in, decisions recorded, effects out.

The in-memory state of every tenant is a projection of the acd's own event store, applied
in ``position`` order (commit order) and nothing else: it is rebuilt from the first event at
start, and kept current by reading what was appended since (``catch_up``). Events appended
by someone else (``plateau config apply``) are picked up the same way.

A decision (``decide``) runs on a connection inside a transaction that holds the store's
append lock (``EventStore.lock_appends``): it first reads every event committed so far, then
asks the pure ``Distributor`` what the trigger leads to, and appends those events in the
same transaction. A decision is therefore never taken on a state that a late commit is
about to change, and when the transaction is the consumer's (``apply_once``), the decision
and the checkpoint of the fact that caused it commit together or not at all: a redelivered
or replayed fact changes nothing. Once the transaction has committed, its events are
applied to the state without being read back (``committed``).

Effects towards the gateway (``ConnectAgent`` for a reservation, ``Hangup`` when routing
gives up on an inbound call) are derived from recorded events *after* they commit, and sent by the
``Effects`` worker with the event id as the idempotency key. After a restart, reservations
still waiting for their agent leg are sent again (the gateway answers a repeated request id
with its first answer).

Outside facts that the acd does not record (the gateway's ``call.agent_ringing``) only
change the in-memory view (the agent shows ``ringing``); rebuilt from the store the agent
shows ``reserved``, which holds the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import cast
from uuid import UUID

import asyncpg
import structlog

from plateau_acd.domain import routing
from plateau_acd.domain.agent import AgentDomainError, AgentStatus, Recorded
from plateau_acd.domain.routing import AcdState, Distributor, Trigger
from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import Envelope, EventData, utc_now
from plateau_contracts.events.agents import (
    AgentBecameAvailable,
    AgentBecameBusy,
    AgentConfigured,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentNotResponding,
    AgentPaused,
    AgentPauseRequested,
    AgentRemoved,
    AgentReserved,
    Skill,
    WrapUpCompleted,
    WrapUpStarted,
)
from plateau_contracts.events.calls import AgentRinging
from plateau_contracts.events.common import StreamedEvent, split_tenant_stream
from plateau_contracts.events.routing import (
    CallAbandoned,
    CallAgentReserved,
    CallAnswered,
    CallDequeued,
    CallOverflowed,
    CallQueued,
    CallRequeued,
    EntryPointMapped,
    EntryPointUnmapped,
    QueueConfigured,
    RoutingFailed,
    TenantConfigured,
)
from plateau_runtime.db import Connection
from plateau_runtime.eventstore import EventStore, NewEvent, StoredEvent, StreamAppend

log = structlog.get_logger(__name__)

#: Facts the pure domain folds (``routing.apply``).
DOMAIN_FACTS: tuple[type[EventData], ...] = (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentBecameAvailable,
    AgentPaused,
    AgentPauseRequested,
    AgentNotResponding,
    AgentReserved,
    AgentBecameBusy,
    WrapUpStarted,
    WrapUpCompleted,
    CallQueued,
    CallAgentReserved,
    CallAnswered,
    CallRequeued,
    CallAbandoned,
    CallDequeued,
    CallOverflowed,
    RoutingFailed,
    QueueConfigured,
    EntryPointMapped,
)

_CATCH_UP_BATCH = 2000
#: Routing failures this recent are hung up again at start: the process may have stopped
#: between recording one and asking the gateway (a call gone by then is NOT_FOUND, harmless).
RESEND_HANGUPS_WITHIN = timedelta(minutes=10)


@dataclass(frozen=True)
class AgentProfile:
    """An agent as the configuration declares it."""

    agent_id: str
    name: str
    extension: str
    skills: tuple[Skill, ...]


@dataclass(frozen=True)
class Reservation:
    """A reservation to turn into a ``ConnectAgent`` (its event id is the request id)."""

    tenant: str
    event_id: UUID
    call_id: str
    agent_id: str
    extension: str
    queue_id: str


@dataclass(frozen=True)
class HangupOrder:
    """A call routing gave up on, to be hung up at the gateway."""

    tenant: str
    event_id: UUID
    call_id: str
    no_queue: bool


@dataclass(frozen=True)
class CallCard:
    """What the agent desk shows of a call (screen pop)."""

    call_id: str
    ani: str | None
    dnis: str | None
    queue_id: str
    enqueued_at: datetime
    campaign_id: str | None = None


@dataclass
class TenantBook:
    """Everything the acd knows of one tenant: the domain state and the configuration."""

    tenant: str
    state: AcdState = field(default_factory=AcdState)
    name: str = ""
    pause_codes: frozenset[str] = frozenset()
    config_version: int = 0
    profiles: dict[str, AgentProfile] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)  # by call id
    cards: dict[str, CallCard] = field(default_factory=dict)  # by call id

    def outstanding(self) -> list[Reservation]:
        """Reservations whose agent leg is not known to be ringing or answered yet."""
        found = []
        for call_id, reservation in self.reservations.items():
            agent = self.state.agents.get(reservation.agent_id)
            if (
                agent is not None
                and agent.call_id == call_id
                and agent.status is AgentStatus.RESERVED
            ):
                found.append(reservation)
        return found

    def is_current(self, reservation: Reservation) -> bool:
        """Whether the reservation still holds (the agent is reserved or ringing for it)."""
        agent = self.state.agents.get(reservation.agent_id)
        held = self.reservations.get(reservation.call_id)
        return (
            held is not None
            and held.event_id == reservation.event_id
            and agent is not None
            and agent.call_id == reservation.call_id
            and agent.status in (AgentStatus.RESERVED, AgentStatus.RINGING)
        )


Effect = Reservation | HangupOrder
Listener = Callable[[str, str], None]  # (tenant, agent id) changed
#: What an outside fact means given the tenant's current state: a trigger to decide on,
#: the gateway ringing an agent (shown, not recorded), or nothing.
Interpretation = Trigger | AgentRinging | None
Interpret = Callable[[AcdState, Envelope], Interpretation]


@dataclass(frozen=True)
class _Ringing:
    tenant: str
    fact: AgentRinging
    at: datetime


#: The outcome of one outside fact of a batch, in order: ringing to show, or the
#: events its decision recorded.
_Outcome = _Ringing | list[StoredEvent]


@dataclass(frozen=True)
class _Prepared:
    """What a batch's decisions lead to: each tenant's state (stream versions aside) and
    the payload of each event, in the order appended; and the states they started from."""

    states: dict[str, AcdState]
    decided: list[EventData]
    started_from: dict[str, AcdState] = field(default_factory=dict)


class Acd:
    """The acd's state and its one way to decide; see the module docstring."""

    def __init__(
        self,
        store: EventStore,
        pool: asyncpg.Pool,
        *,
        clock: Callable[[], datetime] = utc_now,
        distributor: Distributor | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._clock = clock
        self._distributor = distributor or Distributor()
        self._books: dict[str, TenantBook] = {}
        self._position = 0
        self._mutex = asyncio.Lock()
        self._listeners: set[Listener] = set()
        self._effects: asyncio.Queue[Effect] = asyncio.Queue()
        self._loaded = asyncio.Event()
        self._uncommitted: list[_Outcome] = []
        self._prepared: _Prepared | None = None
        self._recent_failures: list[HangupOrder] = []

    # -- reading -------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Position of the last stored event applied."""
        return self._position

    @property
    def effects(self) -> asyncio.Queue[Effect]:
        """Effects of committed decisions, in order, for the ``Effects`` worker."""
        return self._effects

    def book(self, tenant: str) -> TenantBook:
        """The tenant's book (empty when the tenant was never configured)."""
        found = self._books.get(tenant)
        if found is None:
            found = self._books[tenant] = TenantBook(tenant)
        return found

    def tenants(self) -> list[str]:
        return sorted(self._books)

    def now(self) -> datetime:
        return self._clock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(tenant, agent_id)`` after each change of an agent; returns the
        function that unsubscribes."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    # -- loading and following the store -------------------------------------------------

    async def load(self) -> None:
        """Rebuild every tenant from the store, then queue what is still to be sent."""
        async with self._mutex, self._pool.acquire() as conn, conn.transaction():
            await self._catch_up(conn, initial=True)
            self._loaded.set()
        pending = 0
        for book in self._books.values():
            for reservation in book.outstanding():
                self._effects.put_nowait(reservation)
                pending += 1
        for order in self._recent_failures:
            self._effects.put_nowait(order)
        self._recent_failures = []
        log.info(
            "acd.loaded",
            position=self._position,
            tenants=len(self._books),
            reservations_to_send=pending,
            calls_waiting=sum(
                len(q.calls) for b in self._books.values() for q in b.state.queues.values()
            ),
        )

    async def refresh(self) -> None:
        """Apply what was committed since the last read (waits for appends in flight)."""
        await self._loaded.wait()
        async with self._mutex, self._pool.acquire() as conn, conn.transaction():
            await self._store.lock_appends(conn)
            await self._catch_up(conn)

    async def refresh_unless_busy(self) -> None:
        """``refresh``, unless an append is in flight: then its writer applies it (the
        consumer's ``committed``), and reading it back here would only do that twice."""
        await self._loaded.wait()
        async with self._mutex, self._pool.acquire() as conn, conn.transaction():
            if await self._store.try_lock_appends(conn):
                await self._catch_up(conn)

    async def _catch_up(self, conn: Connection, *, initial: bool = False) -> None:
        changed: set[tuple[str, str]] = set()
        while True:
            batch = await self._store.read_all(self._position, _CATCH_UP_BATCH, conn=conn)
            for stored in batch:
                self._apply_stored(stored, changed, emit_effects=not initial)
                self._position = stored.position
            if len(batch) < _CATCH_UP_BATCH:
                break
        self._notify(changed)

    def _apply_stored(
        self, stored: StoredEvent, changed: set[tuple[str, str]], *, emit_effects: bool
    ) -> None:
        envelope = stored.envelope
        try:
            data = parse(envelope)
        except UnknownEventError:
            log.warning("acd.unknown_event", type=envelope.type, position=stored.position)
            return
        book = self.book(envelope.tenant)
        if _configure(book, data):
            return
        if not isinstance(data, DOMAIN_FACTS):
            return
        # DOMAIN_FACTS are exactly the facts ``routing.apply`` folds.
        fact = cast(routing.Fact, data)
        book.state = routing.apply(
            book.state, Recorded(fact, envelope.occurred_at, envelope.stream_version)
        )
        self._note(book, envelope, data, changed, emit_effects=emit_effects)

    def _note(
        self,
        book: TenantBook,
        envelope: Envelope,
        data: EventData,
        changed: set[tuple[str, str]],
        *,
        emit_effects: bool,
    ) -> None:
        """Book what a recorded domain fact means beyond the state: the agents it changed,
        screen-pop cards, reservations to send and calls to hang up."""
        agent_id = getattr(data, "agent_id", None)
        if agent_id:
            changed.add((envelope.tenant, agent_id))
        match data:
            case CallQueued():
                book.cards[data.call_id] = CallCard(
                    data.call_id,
                    data.ani,
                    data.dnis,
                    data.queue_id,
                    envelope.occurred_at,
                    data.campaign_id,
                )
            case CallAgentReserved():
                reservation = Reservation(
                    envelope.tenant,
                    envelope.event_id,
                    data.call_id,
                    data.agent_id,
                    data.extension,
                    data.queue_id,
                )
                book.reservations[data.call_id] = reservation
                if emit_effects:
                    self._effects.put_nowait(reservation)
            case CallRequeued() | CallAnswered():
                book.reservations.pop(data.call_id, None)
            case CallAbandoned() | CallDequeued() | RoutingFailed():
                book.reservations.pop(data.call_id, None)
                book.cards.pop(data.call_id, None)
                # An outbound live answer is left to the gateway's 2-s rule, which plays
                # the compliance message and counts the abandon against the campaign.
                if isinstance(data, RoutingFailed) and data.campaign_id is None:
                    self._hang_up(envelope, data, emit_effects=emit_effects)
            case WrapUpCompleted():
                book.cards.pop(data.call_id, None)

    def _hang_up(self, envelope: Envelope, data: RoutingFailed, *, emit_effects: bool) -> None:
        order = HangupOrder(envelope.tenant, envelope.event_id, data.call_id, data.queue_id is None)
        if emit_effects:
            self._effects.put_nowait(order)
        elif envelope.recorded_at >= self._clock() - RESEND_HANGUPS_WITHIN:
            self._recent_failures.append(order)

    def _notify(self, changed: Iterable[tuple[str, str]]) -> None:
        for tenant, agent_id in changed:
            for listener in list(self._listeners):
                listener(tenant, agent_id)

    # -- deciding ------------------------------------------------------------------------

    async def decide(
        self,
        tenant: str,
        trigger: Trigger,
        *,
        conn: Connection | None = None,
        causation_id: UUID | None = None,
        check: Callable[[TenantBook], None] | None = None,
    ) -> list[StoredEvent]:
        """Record what ``trigger`` leads to; with ``conn``, inside the caller's transaction,
        which must commit for the events to count: then call ``committed()``.

        ``check`` runs on the current book before deciding and may raise to refuse.
        Waits until the state is loaded.
        """
        await self._loaded.wait()
        if conn is not None:
            stored = await self._decide_on(conn, tenant, trigger, causation_id, check)
            self._uncommitted = [stored]
            return stored
        async with self._pool.acquire() as own, own.transaction():
            stored = await self._decide_on(own, tenant, trigger, causation_id, check)
        await self._apply_committed(stored)
        return stored

    async def decide_facts(
        self, conn: Connection, envelopes: Sequence[Envelope], interpret: Interpret
    ) -> None:
        """Decide on outside facts in order, in the caller's transaction (one append lock,
        one catch-up, one append for all of them), which must commit for the decisions to
        count: then call ``committed()``.

        Each fact is decided on the state its predecessors in the batch lead to, exactly
        as if each had been committed before the next was read.
        """
        await self._loaded.wait()
        async with self._mutex:
            await self._store.lock_appends(conn)
            await self._catch_up(conn)
            states: dict[str, AcdState] = {}
            appends: list[StreamAppend] = []
            decided: list[EventData] = []  # the payload of each append, in order
            started: dict[str, AcdState] = {}
            plan: list[_Ringing | int] = []  # ringing, or how many appends a decision made
            for envelope in envelopes:
                tenant = envelope.tenant
                if tenant not in started:
                    started[tenant] = self.book(tenant).state
                state = states.get(tenant) or started[tenant]
                meant = interpret(state, envelope)
                if isinstance(meant, AgentRinging):
                    states[tenant] = routing.apply(state, Recorded(meant, envelope.occurred_at))
                    plan.append(_Ringing(tenant, meant, envelope.occurred_at))
                    continue
                if meant is None:
                    continue
                try:
                    decisions = self._distributor.decide(state, meant)
                except AgentDomainError as exc:
                    # The agent moved on since the fact was read (say, logged out already).
                    log.info("acd.fact_ignored", type=envelope.type, reason=str(exc))
                    continue
                for decision in decisions:
                    state = routing.apply(state, Recorded(decision, meant.at))
                    decided.append(decision)
                    appends.append(
                        StreamAppend(
                            _stream(decision, tenant),
                            [
                                NewEvent(
                                    decision,
                                    tenant=tenant,
                                    occurred_at=meant.at,
                                    causation_id=envelope.event_id,
                                )
                            ],
                            traceparent=envelope.traceparent,
                        )
                    )
                states[tenant] = state
                plan.append(len(decisions))
            stored = await self._store.append_many(appends, conn=conn)
        outcomes: list[_Outcome] = []
        cursor = 0
        for step in plan:
            if isinstance(step, _Ringing):
                outcomes.append(step)
            elif step:
                outcomes.append(stored[cursor : cursor + step])
                cursor += step
        self._uncommitted = outcomes
        self._prepared = _Prepared(states, decided, started)

    def discard_uncommitted(self) -> None:
        """Forget the events of a ``decide(conn=...)`` or ``decide_facts`` whose transaction
        did not commit (a consumer calls it before each batch, so only a committed batch's
        events count)."""
        self._uncommitted = []
        self._prepared = None

    async def committed(self) -> None:
        """The transaction of the last ``decide(conn=...)`` or ``decide_facts`` committed:
        apply its events, and show the ringing agents, in the order of the facts."""
        outcomes, self._uncommitted = self._uncommitted, []
        prepared, self._prepared = self._prepared, None
        stored = [event for o in outcomes if not isinstance(o, _Ringing) for event in o]
        if prepared is not None and await self._adopt(outcomes, stored, prepared):
            return
        ringing = [o for o in outcomes if isinstance(o, _Ringing)]
        if not ringing:
            await self._apply_committed(stored)
            return
        async with self._mutex:
            in_order = not stored or stored[0].position == self._position + 1
            if in_order:
                changed: set[tuple[str, str]] = set()
                for outcome in outcomes:
                    if isinstance(outcome, _Ringing):
                        self._show_ringing(outcome, changed)
                        continue
                    for event in outcome:
                        self._apply_stored(event, changed, emit_effects=True)
                        self._position = event.position
                self._notify(changed)
                return
        # Someone read our events already (a decision of its own): bring the state up to
        # date, then show who rings.
        await self._apply_committed(stored)
        async with self._mutex:
            changed = set()
            for outcome in ringing:
                self._show_ringing(outcome, changed)
            self._notify(changed)

    async def _adopt(
        self, outcomes: list[_Outcome], stored: list[StoredEvent], prepared: _Prepared
    ) -> bool:
        """Take the states ``decide_facts`` computed as the tenants' states, instead of
        parsing and folding its events again; only when nothing was applied since (else
        False, and the caller applies the events)."""
        async with self._mutex:
            if stored and stored[0].position != self._position + 1:
                return False
            if any(
                self.book(tenant).state is not prepared.started_from.get(tenant)
                for tenant in prepared.states
            ):
                return False
            changed: set[tuple[str, str]] = set()
            versions: dict[str, dict[str, int]] = {}
            for event, data in zip(stored, prepared.decided, strict=True):
                envelope = event.envelope
                book = self.book(envelope.tenant)
                self._note(book, envelope, data, changed, emit_effects=True)
                versions.setdefault(envelope.tenant, {})[envelope.stream] = envelope.stream_version
                self._position = event.position
            for outcome in outcomes:
                if isinstance(outcome, _Ringing):
                    changed.add((outcome.tenant, outcome.fact.agent_id))
            for tenant, state in prepared.states.items():
                self.book(tenant).state = _stamped(state, tenant, versions.get(tenant, {}))
            self._notify(changed)
            return True

    def _show_ringing(self, ringing: _Ringing, changed: set[tuple[str, str]]) -> None:
        book = self.book(ringing.tenant)
        before = book.state.agents.get(ringing.fact.agent_id)
        book.state = routing.apply(book.state, Recorded(ringing.fact, ringing.at))
        if book.state.agents.get(ringing.fact.agent_id) is not before:
            changed.add((ringing.tenant, ringing.fact.agent_id))

    async def _apply_committed(self, stored: list[StoredEvent]) -> None:
        """Apply committed events of ours without reading them back when they follow the
        state directly (appended under the lock right after a catch-up: nothing else can sit
        between); otherwise read what is missing."""
        if not stored:
            return
        async with self._mutex:
            if stored[0].position == self._position + 1:
                changed: set[tuple[str, str]] = set()
                for event in stored:
                    self._apply_stored(event, changed, emit_effects=True)
                    self._position = event.position
                self._notify(changed)
                return
        if stored[-1].position > self._position:
            await self.refresh()

    async def _decide_on(
        self,
        conn: Connection,
        tenant: str,
        trigger: Trigger,
        causation_id: UUID | None,
        check: Callable[[TenantBook], None] | None,
    ) -> list[StoredEvent]:
        async with self._mutex:
            await self._store.lock_appends(conn)
            await self._catch_up(conn)
            book = self.book(tenant)
            if check is not None:
                check(book)
            decisions = self._distributor.decide(book.state, trigger)
            if not decisions:
                return []
            appends = [
                StreamAppend(
                    _stream(decision, tenant),
                    [
                        NewEvent(
                            decision,
                            tenant=tenant,
                            occurred_at=trigger.at,
                            causation_id=causation_id,
                        )
                    ],
                )
                for decision in decisions
            ]
            return await self._store.append_many(appends, conn=conn)

    def due(self, tenant: str, at: datetime) -> bool:
        """Whether time alone would lead to a decision now (timers, or calls to dispatch)."""
        return bool(self._distributor.decide(self.book(tenant).state, routing.Tick(at)))

    async def tick(self) -> int:
        """Record what time alone leads to in every tenant; returns how many events."""
        recorded = 0
        at = self._clock()
        for tenant in self.tenants():
            if self.due(tenant, at):
                recorded += len(await self.decide(tenant, routing.Tick(at)))
        return recorded

    def note_ringing(self, tenant: str, fact: AgentRinging, at: datetime) -> None:
        """The gateway rings the agent: show it (not recorded; see the module docstring)."""
        book = self.book(tenant)
        before = book.state.agents.get(fact.agent_id)
        book.state = routing.apply(book.state, Recorded(fact, at))
        if book.state.agents.get(fact.agent_id) is not before:
            self._notify([(tenant, fact.agent_id)])

    # -- follow-up -----------------------------------------------------------------------

    async def follow(self, stop: asyncio.Event, tick_seconds: float) -> None:
        """Read what others committed (``plateau config apply``) and run timers until
        ``stop`` (a background task)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_seconds)
            await self.refresh_unless_busy()
            await self.tick()


def _configure(book: TenantBook, data: EventData) -> bool:
    """Apply a configuration fact the domain does not fold; whether it was one."""
    match data:
        case TenantConfigured():
            book.name = data.name
            book.pause_codes = frozenset(data.pause_codes)
            book.config_version = data.config_version
            book.state = replace(book.state, time_zone=data.time_zone)
        case AgentConfigured():
            book.profiles[data.agent_id] = AgentProfile(
                data.agent_id, data.name, data.extension, data.skills
            )
        case AgentRemoved():
            book.profiles.pop(data.agent_id, None)
        case EntryPointUnmapped():
            entry_points = {k: v for k, v in book.state.entry_points.items() if k != data.dnis}
            book.state = replace(book.state, entry_points=entry_points)
        case _:
            return False
    return True


def _stamped(state: AcdState, tenant: str, versions: dict[str, int]) -> AcdState:
    """The state with the stream versions its agents and queues were recorded at (a state
    folded from decisions before they were appended does not know them)."""
    agents = dict(state.agents)
    queues = dict(state.queues)
    for stream, version in versions.items():
        prefix, _, key = split_tenant_stream(stream)
        if prefix == "agent" and key in agents:
            agents[key] = replace(agents[key], version=version)
        elif prefix == "queue" and key in queues:
            queues[key] = replace(queues[key], version=version)
    return replace(state, agents=agents, queues=queues)


def _stream(event: EventData, tenant: str) -> str:
    """The tenant's stream of a decision: queue and agent ids are only unique per tenant."""
    assert isinstance(event, StreamedEvent)
    return event.stream_id(tenant)
