"""The distributor: given agents, queues and waiting calls, decide who takes which call.

``Distributor.decide(state, trigger)`` returns the events that record its decisions
(reservations, requeues, abandons, overflows, routing failures and the agent facts they
imply), in the order they are to be recorded; ``apply(state, recorded)`` folds any
recorded fact, the acd's own or the gateway's, into the state. Nothing here reads a
clock: every trigger carries its instant.

Invariants the decisions keep (checked by the property tests):

* a call is reserved for at most one agent, an agent holds at most one call, and a call
  is ``reserved_for`` an agent exactly when that agent holds it;
* per queue, a call is only reserved when no call ahead of it (priority, then arrival)
  is still waiting unreserved: the head blocks its queue when no agent may take it;
* across queues that share agents, the queue with the higher ``priority`` is served
  first, then the call with the higher call priority, then the one waiting longer;
* ring-no-answer puts the call back at the head of its queue and the agent in
  ``not_responding``; an agent leg that fails (busy, declined, unreachable) does the same,
  except an unregistered extension, which logs the agent out;
* a caller who hangs up while waiting (or ringing an agent) is recorded as abandoned
  with the wait; logout while reserved requeues the call at the head first;
* an outbound live answer (``direction="outbound"``) is served before every inbound call,
  whatever the queues' priorities: the gateway holds it 2 s at most. When the originate
  named an agent (preview) and that agent is free, the call is reserved for that agent.
  When the gateway gives it up (compliance abandon) or it ends while waiting, it leaves
  the queue as ``call.dequeued``, not as the queue's abandon; a routing failure of such
  a call names its campaign and is not hung up by the acd (the gateway's 2-s rule ends it
  and counts it against the campaign);
* a call past its queue's ``max_wait_s`` (and not ringing an agent) overflows to the
  queue's ``overflow_queue_id`` or, without one, routing fails (the gateway hangs up);
* a wrap-up with a timer ends on the first tick at or after ``start + wrap_up_s``.

Replays are harmless: ``apply`` skips facts whose ``stream_version`` it has already seen,
and a trigger that no longer matches the state (a duplicate ring-no-answer, an answer
for a call that was requeued, a second hang-up) decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from plateau_acd.domain import agent as agents
from plateau_acd.domain import queue as queues
from plateau_acd.domain.agent import DEFAULT_TIME_ZONE, AgentState, AgentStatus, Recorded
from plateau_acd.domain.queue import QueueConfig, QueueState, WaitingCall
from plateau_acd.domain.strategies import candidate, choose, is_eligible
from plateau_contracts.events.agents import (
    AgentBecameAvailable,
    AgentBecameBusy,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentNotResponding,
    AgentPaused,
    AgentPauseRequested,
    AgentReserved,
    WrapUpCompleted,
    WrapUpStarted,
)
from plateau_contracts.events.calls import AgentLegFailure, AgentRinging
from plateau_contracts.events.routing import (
    CallAbandoned,
    CallAgentReserved,
    CallDequeued,
    CallOverflowed,
    CallQueued,
    CallRequeued,
    EntryPointMapped,
    OverflowReason,
    QueueConfigured,
    RequeueReason,
    RoutingFailed,
    RoutingFailure,
)
from plateau_contracts.events.routing import (
    CallAnswered as AnsweredFromQueue,
)

Direction = Literal["inbound", "outbound"]
T = TypeVar("T")

#: Call priority of an outbound live answer in its queue: ahead of any inbound call.
OUTBOUND_PRIORITY = 100

#: Everything the distributor decides.
Decision = (
    agents.Event
    | CallQueued
    | AnsweredFromQueue
    | CallAgentReserved
    | CallRequeued
    | CallAbandoned
    | CallDequeued
    | CallOverflowed
    | RoutingFailed
)

#: Everything ``apply`` folds: decisions, configuration, and the gateway's ringing fact.
Fact = Decision | QueueConfigured | EntryPointMapped | AgentRinging

_AGENT_EVENTS = (
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
)


_NOT_RESPONDING: Mapping[RequeueReason, agents.NotRespondingReason] = {
    RequeueReason.RING_NO_ANSWER: "ring_no_answer",
    RequeueReason.AGENT_REJECTED: "rejected",
    RequeueReason.AGENT_UNREACHABLE: "unreachable",
}


# -- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcdState:
    """Agents, queues and entry points of one tenant, as the acd's events left them."""

    agents: Mapping[str, AgentState] = field(default_factory=dict)
    queues: Mapping[str, QueueState] = field(default_factory=dict)
    entry_points: Mapping[str, str] = field(default_factory=dict)  # dnis -> queue id
    time_zone: str = DEFAULT_TIME_ZONE

    @classmethod
    def configured(
        cls,
        queue_configs: Iterable[QueueConfig],
        entry_points: Mapping[str, str] | None = None,
        time_zone: str = DEFAULT_TIME_ZONE,
    ) -> AcdState:
        """An empty state with these queues and entry points."""
        return cls(
            queues={q.queue_id: QueueState(config=q) for q in queue_configs},
            entry_points=dict(entry_points or {}),
            time_zone=time_zone,
        )

    def agent(self, agent_id: str) -> AgentState:
        """The agent, logged out if never seen."""
        found = self.agents.get(agent_id)
        return found or AgentState(agent_id=agent_id, time_zone=self.time_zone)

    def queue_of(self, call_id: str) -> QueueState | None:
        """The queue a call is waiting (or reserved) in, if any."""
        for queue in self.queues.values():
            if queue.find(call_id) is not None:
                return queue
        return None

    def holder_of(self, call_id: str) -> AgentState | None:
        """The agent holding a call (reserved, ringing, on call or wrapping it up)."""
        for agent in self.agents.values():
            if agent.call_id == call_id:
                return agent
        return None


def apply(state: AcdState, recorded: Recorded[Fact]) -> AcdState:
    """The state after one recorded fact; a replayed fact changes nothing."""
    fact = recorded.data
    if isinstance(fact, (AgentRinging, *_AGENT_EVENTS)):
        agent = agents.evolve(state.agent(fact.agent_id), _narrowed(recorded, fact))
        state = replace(state, agents={**state.agents, fact.agent_id: agent})
        if isinstance(fact, AgentBecameBusy):
            # The call is served: it leaves its queue (the agent's stream says which).
            queue = state.queues.get(fact.queue_id or "") or state.queue_of(fact.call_id)
            if queue is not None:
                served = queues.evolve(queue, Recorded(fact, recorded.occurred_at))
                state = _with_queue(state, served)
        return state
    if isinstance(fact, EntryPointMapped):
        return replace(state, entry_points={**state.entry_points, fact.dnis: fact.queue_id})
    if fact.queue_id is None:  # a routing failure for an unknown entry point
        return state
    queue = state.queues.get(fact.queue_id)
    if queue is None:
        if not isinstance(fact, QueueConfigured | CallQueued):
            return state  # about a queue that holds nothing here
        queue = QueueState(config=QueueConfig(fact.queue_id))
    return _with_queue(state, queues.evolve(queue, _narrowed(recorded, fact)))


def _narrowed(recorded: Recorded[Fact], fact: T) -> Recorded[T]:
    return Recorded(fact, recorded.occurred_at, recorded.stream_version)


def _with_queue(state: AcdState, queue: QueueState) -> AcdState:
    return replace(state, queues={**state.queues, queue.queue_id: queue})


def fold(initial: AcdState, records: Iterable[Recorded[Fact]]) -> AcdState:
    """Rebuild the state from recorded facts, in the order they were recorded."""
    state = initial
    for recorded in records:
        state = apply(state, recorded)
    return state


# -- triggers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CallArrived:
    """A call needs an agent: offered on an entry point, or a live outbound answer."""

    call_id: str
    at: datetime
    dnis: str | None = None
    ani: str | None = None
    queue_id: str | None = None  # outbound: the campaign's queue, no entry point
    direction: Direction = "inbound"
    priority: int = 0
    campaign_id: str | None = None
    required_skills: tuple[str, ...] = ()
    agent_id: str | None = None  # outbound preview: the agent the originate named


DeskCommand = (
    agents.Login | agents.Logout | agents.SetAvailable | agents.Pause | agents.CompleteWrapUp
)


@dataclass(frozen=True)
class AgentCommand:
    """An agent (or supervisor) command from the desk: login, logout, pause, ready, wrap-up."""

    agent_id: str
    command: DeskCommand
    at: datetime


@dataclass(frozen=True)
class CallAnswered:
    """The gateway connected the call to the agent (``call.connected``)."""

    call_id: str
    agent_id: str
    at: datetime
    direction: Direction = "inbound"


@dataclass(frozen=True)
class RingNoAnswer:
    """The agent let the call ring out (``call.agent_no_answer``)."""

    call_id: str
    agent_id: str
    at: datetime


@dataclass(frozen=True)
class AgentLegFailed:
    """Ringing the agent failed (``call.agent_rejected``) or ``ConnectAgent`` did."""

    call_id: str
    agent_id: str
    reason: AgentLegFailure
    at: datetime


@dataclass(frozen=True)
class CallHungUp:
    """The call ended (``call.ended``): an abandon if it was still waiting; for an outbound
    live answer also the gateway's ``call.compliance_abandoned`` (``cause``)."""

    call_id: str
    at: datetime
    cause: str = "caller_hangup"


@dataclass(frozen=True)
class Tick:
    """Time passed: wrap-up timers and maximum waits are due at ``at``."""

    at: datetime


Trigger = (
    CallArrived | AgentCommand | CallAnswered | RingNoAnswer | AgentLegFailed | CallHungUp | Tick
)


# -- the distributor --------------------------------------------------------------------


class Distributor:
    """Decides reservations, requeues, abandons and overflows; holds no state of its own."""

    def decide(self, state: AcdState, trigger: Trigger) -> list[Decision]:
        """The events recording what ``trigger`` leads to, in recording order."""
        run = _Run(state, trigger.at)
        match trigger:
            case CallArrived():
                run.arrive(trigger)
            case AgentCommand():
                run.agent_command(trigger)
            case CallAnswered():
                run.answer(trigger)
            case RingNoAnswer():
                run.release(trigger.call_id, trigger.agent_id, RequeueReason.RING_NO_ANSWER)
            case AgentLegFailed():
                run.leg_failed(trigger)
            case CallHungUp():
                run.hang_up(trigger.call_id, trigger.cause)
            case Tick():
                run.expire_wrap_ups()
                run.expire_waits()
        run.dispatch()
        return run.events

    def apply(self, state: AcdState, recorded: Recorded[Fact]) -> AcdState:
        """Same as the module's ``apply``."""
        return apply(state, recorded)


class _Run:
    """One decision in progress: the events so far and the state they lead to."""

    def __init__(self, state: AcdState, at: datetime) -> None:
        self.state = state
        self.at = at
        self.events: list[Decision] = []

    def emit(self, *events: Decision) -> None:
        for event in events:
            self.events.append(event)
            self.state = apply(self.state, Recorded(event, self.at))

    # -- triggers -----------------------------------------------------------------------

    def arrive(self, trigger: CallArrived) -> None:
        if (
            self.state.queue_of(trigger.call_id) is not None
            or self.state.holder_of(trigger.call_id) is not None
        ):
            return  # already routed: a duplicate offer
        if trigger.direction == "outbound" and trigger.queue_id is None:
            self.emit(
                RoutingFailed(
                    call_id=trigger.call_id,
                    reason=RoutingFailure.OTHER,
                    queue_id=None,
                    campaign_id=trigger.campaign_id,
                    detail=f"campaign {trigger.campaign_id!r} is unknown to the acd "
                    "(its campaign.created was not applied yet)",
                )
            )
            return
        queue_id = trigger.queue_id or self.state.entry_points.get(trigger.dnis or "")
        if trigger.queue_id is not None and queue_id not in self.state.queues:
            self.emit(
                RoutingFailed(
                    call_id=trigger.call_id,
                    reason=RoutingFailure.OTHER,
                    queue_id=trigger.queue_id,
                    dnis=trigger.dnis,
                    detail=f"queue {trigger.queue_id!r} is not configured",
                    campaign_id=trigger.campaign_id if trigger.direction == "outbound" else None,
                )
            )
            return
        if queue_id is None or queue_id not in self.state.queues:
            self.emit(
                RoutingFailed(
                    call_id=trigger.call_id,
                    reason=RoutingFailure.UNKNOWN_DNIS,
                    queue_id=None,
                    dnis=trigger.dnis or "unknown",
                    detail=f"no entry point maps {trigger.dnis!r} to a queue",
                )
            )
            return
        self.emit(
            CallQueued(
                queue_id=queue_id,
                call_id=trigger.call_id,
                direction=trigger.direction,
                priority=trigger.priority,
                ani=trigger.ani,
                dnis=trigger.dnis,
                campaign_id=trigger.campaign_id,
                required_skills=trigger.required_skills,
            )
        )
        if trigger.agent_id is not None:
            self._reserve_named(queue_id, trigger.call_id, trigger.agent_id)

    def _reserve_named(self, queue_id: str, call_id: str, agent_id: str) -> None:
        """Preview: reserve the agent the originate named, when free to take the call;
        otherwise the call waits for whoever the queue's strategy picks."""
        queue = self.state.queues[queue_id]
        call = queue.find(call_id)
        agent = self.state.agents.get(agent_id)
        if call is None or agent is None or not is_eligible(agent, call, queue.config):
            return
        self.emit(
            CallAgentReserved(
                queue_id=queue_id,
                call_id=call_id,
                agent_id=agent_id,
                extension=agent.extension or "",
                waited_ms=call.waited_ms(self.at),
                strategy="preview",
                candidates=(candidate(agent, self.at, 1.0),),
                decision=f"preview: the originate named {agent_id}, who is available",
            ),
            *agents.decide(agent, agents.Reserve(call_id, queue_id)),
        )

    def agent_command(self, trigger: AgentCommand) -> None:
        agent = self.state.agent(trigger.agent_id)
        command = trigger.command
        held = self.state.queue_of(agent.call_id) if agent.call_id else None
        if isinstance(command, agents.Logout) and held is not None and agent.call_id:
            # Check first so a refused logout requeues nothing.
            decided = agents.decide(agent, command)
            self.emit(
                self._requeue(held, agent.call_id, agent.agent_id, RequeueReason.AGENT_LOGGED_OUT)
            )
            self.emit(*decided)
            return
        self.emit(*agents.decide(agent, command))

    def answer(self, trigger: CallAnswered) -> None:
        agent = self.state.agent(trigger.agent_id)
        found = self._reserved(trigger.call_id, agent.agent_id)
        if found is None:
            return  # the reservation is gone (requeued, abandoned): a late answer
        if agent.call_id != trigger.call_id or agent.status not in agents.HOLDING_A_CALL:
            return
        queue, call = found
        waited = call.waited_ms(self.at)
        connected = agents.decide(agent, agents.Connect(trigger.call_id, call.direction))
        self.emit(
            AnsweredFromQueue(
                queue_id=queue.queue_id,
                call_id=call.call_id,
                agent_id=agent.agent_id,
                waited_ms=waited,
                within_service_level=waited <= queue.config.service_level_threshold_s * 1000,
            ),
            *connected,
        )

    def release(self, call_id: str, agent_id: str, reason: RequeueReason) -> None:
        why: agents.NotRespondingReason = _NOT_RESPONDING.get(reason, "rejected")
        found = self._reserved(call_id, agent_id)
        if found is None:
            return  # not (or no longer) reserved for this agent: a duplicate
        queue = found[0]
        self.emit(self._requeue(queue, call_id, agent_id, reason))
        agent = self.state.agent(agent_id)
        if agent.call_id != call_id:
            return
        self.emit(
            *agents.decide(
                agent, agents.MarkNotResponding(call_id, queue.config.ring_timeout_s, why)
            )
        )

    def leg_failed(self, trigger: AgentLegFailed) -> None:
        if trigger.reason is not AgentLegFailure.NOT_REGISTERED:
            reason = (
                RequeueReason.AGENT_UNREACHABLE
                if trigger.reason is AgentLegFailure.UNREACHABLE
                else RequeueReason.AGENT_REJECTED
            )
            self.release(trigger.call_id, trigger.agent_id, reason)
            return
        found = self._reserved(trigger.call_id, trigger.agent_id)
        if found is None:
            return
        queue = found[0]
        self.emit(
            self._requeue(queue, trigger.call_id, trigger.agent_id, RequeueReason.AGENT_UNREACHABLE)
        )
        agent = self.state.agent(trigger.agent_id)
        if agent.call_id == trigger.call_id:
            self.emit(*agents.decide(agent, agents.Logout("extension_unregistered")))

    def hang_up(self, call_id: str, cause: str) -> None:
        queue = self.state.queue_of(call_id)
        call = queue.find(call_id) if queue else None
        if queue is not None and call is not None:
            if call.direction == "outbound":
                self.emit(
                    CallDequeued(
                        queue_id=queue.queue_id,
                        call_id=call_id,
                        waited_ms=call.waited_ms(self.at),
                        campaign_id=call.campaign_id,
                        cause=cause,
                        agent_id=call.reserved_for,
                    )
                )
            else:
                self.emit(
                    CallAbandoned(
                        queue_id=queue.queue_id,
                        call_id=call_id,
                        waited_ms=call.waited_ms(self.at),
                        agent_id=call.reserved_for,
                    )
                )
            holder = self.state.agent(call.reserved_for) if call.reserved_for else None
            if holder is not None and holder.call_id == call_id:
                self.emit(*agents.decide(holder, agents.EndCall(call_id)))
            return
        holder = self.state.holder_of(call_id)
        if holder is None or holder.status is not AgentStatus.ON_CALL:
            return  # already ended
        config = self.state.queues.get(holder.queue_id or "")
        wrap_up_s = config.config.wrap_up_s if config else None
        self.emit(*agents.decide(holder, agents.EndCall(call_id, wrap_up_s)))
        if wrap_up_s == 0:
            self._complete_wrap_up(self.state.agent(holder.agent_id))

    def expire_wrap_ups(self) -> None:
        for agent in sorted(self.state.agents.values(), key=lambda a: a.agent_id):
            if (
                agent.status is AgentStatus.WRAP_UP
                and agent.wrap_up_s is not None
                and agent.since is not None
                and agent.since + timedelta(seconds=agent.wrap_up_s) <= self.at
            ):
                self._complete_wrap_up(agent)

    def expire_waits(self) -> None:
        for queue_id in sorted(self.state.queues):
            queue = self.state.queues[queue_id]
            max_wait = queue.config.max_wait_s
            if max_wait is None:
                continue
            for call in queue.waiting():
                if call.waited_ms(self.at) >= max_wait * 1000:
                    self._leave_after_max_wait(queue, call)

    def dispatch(self) -> None:
        """Reserve agents for waiting calls until no free agent fits any queue's head."""
        blocked: set[str] = set()
        while True:
            heads = [
                (queue, call)
                for queue in self.state.queues.values()
                if queue.queue_id not in blocked and (call := queue.next_call()) is not None
            ]
            if not heads:
                return
            queue, call = min(
                heads,
                key=lambda qc: (
                    qc[1].direction != "outbound",
                    -qc[0].config.priority,
                    -qc[1].priority,
                    qc[1].enqueued_at,
                    qc[0].queue_id,
                ),
            )
            choice = choose(
                call, queue.config, self.state.agents.values(), self.at, queue.round_robin_cursor
            )
            if choice is None:
                blocked.add(queue.queue_id)
                continue
            agent = self.state.agent(choice.agent_id)
            self.emit(
                CallAgentReserved(
                    queue_id=queue.queue_id,
                    call_id=call.call_id,
                    agent_id=agent.agent_id,
                    extension=agent.extension or "",
                    waited_ms=call.waited_ms(self.at),
                    strategy=choice.strategy.value,
                    candidates=choice.candidates,
                    decision=choice.reason,
                ),
                *agents.decide(agent, agents.Reserve(call.call_id, queue.queue_id)),
            )

    # -- helpers ------------------------------------------------------------------------

    def _reserved(self, call_id: str, agent_id: str) -> tuple[QueueState, WaitingCall] | None:
        """The queue and call reserved for the agent, if a fact at ``at`` can be about it.

        A gateway fact older than the reservation in progress is about an earlier one
        (the same call may be reserved for the same agent again after a requeue): stale.
        """
        queue = self.state.queue_of(call_id)
        call = queue.find(call_id) if queue else None
        if queue is None or call is None or call.reserved_for != agent_id:
            return None
        if call.reserved_at is not None and self.at < call.reserved_at:
            return None
        return queue, call

    def _requeue(
        self, queue: QueueState, call_id: str, agent_id: str, reason: RequeueReason
    ) -> CallRequeued:
        return CallRequeued(
            queue_id=queue.queue_id, call_id=call_id, agent_id=agent_id, reason=reason, at_head=True
        )

    def _complete_wrap_up(self, agent: AgentState) -> None:
        self.emit(*agents.decide(agent, agents.CompleteWrapUp(completed_by="timer")))

    def _leave_after_max_wait(self, queue: QueueState, call: WaitingCall) -> None:
        config = queue.config
        waited = call.waited_ms(self.at)
        target = config.overflow_queue_id
        if target is not None and target in self.state.queues and target != queue.queue_id:
            self.emit(
                CallOverflowed(
                    queue_id=queue.queue_id,
                    call_id=call.call_id,
                    to_queue_id=target,
                    reason=OverflowReason.MAX_WAIT_EXCEEDED,
                    waited_ms=waited,
                ),
                CallQueued(
                    queue_id=target,
                    call_id=call.call_id,
                    direction=call.direction,
                    priority=call.priority,
                    ani=call.ani,
                    dnis=call.dnis,
                    campaign_id=call.campaign_id,
                    required_skills=call.required_skills,
                    overflowed_from=queue.queue_id,
                ),
            )
            return
        detail = f"waited {waited / 1000:g} s, over the queue's maximum of {config.max_wait_s} s"
        if target is not None:
            detail += f"; overflow queue {target!r} is not configured"
        self.emit(
            RoutingFailed(
                call_id=call.call_id,
                reason=config.hang_up_cause,
                queue_id=queue.queue_id,
                dnis=call.dnis,
                detail=detail,
                campaign_id=call.campaign_id if call.direction == "outbound" else None,
            )
        )
