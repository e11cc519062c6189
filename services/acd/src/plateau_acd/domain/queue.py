"""One queue as the acd sees it: its configuration and its waiting calls, rebuilt from events.

Waiting calls are kept in serving order: higher ``priority`` first, then arrival. Arrival is
a sequence number given when the call enters the queue (so equal instants keep the order
they were recorded in). A call requeued after its agent failed to take it (ring-no-answer,
reject, logout) goes back at the *head* of its priority band: it gets a sequence number
below every other call's. A call with a higher priority (an outbound live answer) still
goes first.

A call stays in its queue, marked ``reserved_for`` its agent, until the agent answers
(``agent.became_busy`` names the queue), the caller abandons, it overflows, routing
gives up, or (an outbound live answer) the gateway gives it up. ``evolve`` skips a fact
whose ``stream_version`` is not above the queue's ``version``; outside facts (the agent's
``became_busy``) are idempotent by content.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal

from plateau_acd.domain.agent import Recorded
from plateau_contracts.events.agents import AgentBecameBusy
from plateau_contracts.events.routing import (
    CallAbandoned,
    CallAgentReserved,
    CallAnswered,
    CallDequeued,
    CallOverflowed,
    CallQueued,
    CallRequeued,
    QueueConfigured,
    RoutingFailed,
    RoutingFailure,
    SkillMinimum,
)

Direction = Literal["inbound", "outbound"]


class Strategy(StrEnum):
    """How a queue picks among the agents free to take its next call."""

    LONGEST_IDLE = "longest_idle"
    ROUND_ROBIN = "round_robin"
    FEWEST_CALLS = "fewest_calls"
    SKILLS_BASED = "skills_based"


class FinalAction(StrEnum):
    """What happens to a call past its maximum wait when there is no overflow queue."""

    HANG_UP = "hang_up"
    # VOICEMAIL: a later issue.


@dataclass(frozen=True)
class SkillRequirement:
    """A skill an agent needs for a queue, at a minimum level."""

    name: str
    min_level: int = 1


@dataclass(frozen=True)
class QueueConfig:
    """A queue's settings: how calls wait, are routed and leave."""

    queue_id: str
    name: str = ""
    strategy: Strategy = Strategy.LONGEST_IDLE
    required_skills: tuple[SkillRequirement, ...] = ()
    service_level_threshold_s: int = 20
    service_level_target: float = 0.8
    wrap_up_s: int | None = None  # None: until the agent completes it
    ring_timeout_s: int = 15
    max_wait_s: int | None = None  # None: calls wait as long as the caller does
    overflow_queue_id: str | None = None
    final_action: FinalAction = FinalAction.HANG_UP
    hang_up_cause: RoutingFailure = RoutingFailure.MAX_WAIT_EXCEEDED
    priority: int = 0  # across queues sharing agents: higher is served first

    @classmethod
    def from_event(cls, event: QueueConfigured, priority: int = 0) -> QueueConfig:
        """The configuration a ``queue.configured`` fact records (levels default to 1;
        ``priority`` applies when the fact has none)."""
        levels = {s.name: s.min_level for s in event.skill_levels or ()}
        return cls(
            queue_id=event.queue_id,
            name=event.name,
            strategy=Strategy(event.strategy),
            required_skills=tuple(
                SkillRequirement(name, levels.get(name, 1)) for name in event.required_skills
            ),
            service_level_threshold_s=event.service_level_threshold_s,
            service_level_target=event.service_level_target,
            wrap_up_s=event.wrap_up_s,
            ring_timeout_s=event.ring_timeout_s,
            max_wait_s=event.max_wait_s,
            overflow_queue_id=event.overflow_queue_id,
            final_action=FinalAction(event.final_action or FinalAction.HANG_UP),
            priority=priority if event.priority is None else event.priority,
        )

    def to_event(self) -> QueueConfigured:
        """The ``queue.configured`` fact recording this configuration."""
        return QueueConfigured(
            queue_id=self.queue_id,
            name=self.name or self.queue_id,
            strategy=self.strategy.value,
            required_skills=tuple(skill.name for skill in self.required_skills),
            ring_timeout_s=self.ring_timeout_s,
            wrap_up_s=self.wrap_up_s,
            max_wait_s=self.max_wait_s,
            overflow_queue_id=self.overflow_queue_id,
            service_level_threshold_s=self.service_level_threshold_s,
            service_level_target=self.service_level_target,
            skill_levels=tuple(
                SkillMinimum(name=skill.name, min_level=skill.min_level)
                for skill in self.required_skills
                if skill.min_level > 1
            ),
            priority=self.priority,
            final_action=self.final_action.value,
        )


@dataclass(frozen=True)
class WaitingCall:
    """A call waiting in a queue (possibly set aside for an agent being rung)."""

    call_id: str
    priority: int
    seq: int  # arrival order in this queue; requeued calls get one below the head
    enqueued_at: datetime
    direction: Direction = "inbound"
    ani: str | None = None
    dnis: str | None = None
    campaign_id: str | None = None
    required_skills: tuple[str, ...] = ()
    overflowed_from: str | None = None
    reserved_for: str | None = None  # agent id while an agent is reserved or ringing
    reserved_at: datetime | None = None  # when that reservation was made
    requeues: int = 0

    @property
    def order_key(self) -> tuple[int, int]:
        """Serving order: priority (highest first), then arrival."""
        return (-self.priority, self.seq)

    def waited_ms(self, now: datetime) -> int:
        """Milliseconds spent in this queue so far."""
        return max(0, int((now - self.enqueued_at).total_seconds() * 1000))


@dataclass(frozen=True)
class QueueState:
    """A queue's configuration and its calls in serving order."""

    config: QueueConfig
    calls: tuple[WaitingCall, ...] = ()
    version: int = 0  # last applied version of ``queue-<queue_id>``
    next_seq: int = 0
    head_seq: int = 0  # lowest sequence number given so far (requeues go below it)
    round_robin_cursor: str | None = None  # last agent a round-robin queue chose

    @property
    def queue_id(self) -> str:
        """The queue's id."""
        return self.config.queue_id

    def find(self, call_id: str) -> WaitingCall | None:
        """The call if it is in this queue."""
        for call in self.calls:
            if call.call_id == call_id:
                return call
        return None

    def waiting(self) -> tuple[WaitingCall, ...]:
        """Calls not yet set aside for an agent, in serving order."""
        return tuple(call for call in self.calls if call.reserved_for is None)

    def next_call(self) -> WaitingCall | None:
        """The call to serve next, if any."""
        for call in self.calls:
            if call.reserved_for is None:
                return call
        return None


QueueFact = (
    QueueConfigured
    | CallQueued
    | CallAnswered
    | CallAgentReserved
    | CallRequeued
    | CallAbandoned
    | CallDequeued
    | CallOverflowed
    | RoutingFailed
    | AgentBecameBusy
)


def evolve(state: QueueState, recorded: Recorded[QueueFact]) -> QueueState:
    """The queue after one recorded fact; a replayed fact changes nothing."""
    if recorded.stream_version is not None:
        if recorded.stream_version <= state.version:
            return state
        state = replace(state, version=recorded.stream_version)
    fact = recorded.data
    match fact:
        case QueueConfigured():
            return replace(state, config=_reconfigured(state.config, fact))
        case CallQueued():
            return _queued(state, fact, recorded.occurred_at)
        case CallAgentReserved():
            new = _update(state, fact.call_id, fact.agent_id, recorded.occurred_at)
            return replace(new, round_robin_cursor=fact.agent_id)
        case CallRequeued():
            return _requeued(state, fact)
        case (
            CallAnswered()
            | CallAbandoned()
            | CallDequeued()
            | CallOverflowed()
            | RoutingFailed()
            | AgentBecameBusy()
        ):
            return _remove(state, fact.call_id)
    raise TypeError(f"not a queue fact: {fact!r}")  # pragma: no cover


def _reconfigured(old: QueueConfig, fact: QueueConfigured) -> QueueConfig:
    # Facts recorded before ``queue.configured`` carried skill levels, queue priority and
    # final action leave them out: keep the ones already known rather than reset them.
    new = QueueConfig.from_event(fact, old.priority)
    if fact.skill_levels is not None:
        return new
    levels = {skill.name: skill.min_level for skill in old.required_skills}
    skills = tuple(
        SkillRequirement(skill.name, levels.get(skill.name, 1)) for skill in new.required_skills
    )
    return replace(
        new,
        required_skills=skills,
        final_action=old.final_action,
        hang_up_cause=old.hang_up_cause,
    )


def _queued(state: QueueState, fact: CallQueued, at: datetime) -> QueueState:
    if state.find(fact.call_id) is not None:
        return state
    call = WaitingCall(
        call_id=fact.call_id,
        priority=fact.priority,
        seq=state.next_seq,
        enqueued_at=at,
        direction=fact.direction,
        ani=fact.ani,
        dnis=fact.dnis,
        campaign_id=fact.campaign_id,
        required_skills=fact.required_skills,
        overflowed_from=fact.overflowed_from,
    )
    return _with_call(replace(state, next_seq=state.next_seq + 1), state.calls, call)


def _requeued(state: QueueState, fact: CallRequeued) -> QueueState:
    call = state.find(fact.call_id)
    if call is None or call.reserved_for != fact.agent_id:
        return state
    if not fact.at_head:
        return _update(state, fact.call_id, None, None)
    head = state.head_seq - 1
    back = replace(call, reserved_for=None, reserved_at=None, seq=head, requeues=call.requeues + 1)
    return _with_call(replace(state, head_seq=head), _without(state.calls, fact.call_id), back)


# Calls are served from the head, so the call a fact is about is usually among the first:
# these look for it from the head and copy the tuple once, rather than rebuild or re-sort it.


def _index(calls: tuple[WaitingCall, ...], call_id: str) -> int | None:
    for index, call in enumerate(calls):
        if call.call_id == call_id:
            return index
    return None


def _update(
    state: QueueState, call_id: str, reserved_for: str | None, reserved_at: datetime | None
) -> QueueState:
    index = _index(state.calls, call_id)
    if index is None:
        return state
    call = replace(state.calls[index], reserved_for=reserved_for, reserved_at=reserved_at)
    return replace(state, calls=(*state.calls[:index], call, *state.calls[index + 1 :]))


def _without(calls: tuple[WaitingCall, ...], call_id: str) -> tuple[WaitingCall, ...]:
    index = _index(calls, call_id)
    return calls if index is None else calls[:index] + calls[index + 1 :]


def _remove(state: QueueState, call_id: str) -> QueueState:
    calls = _without(state.calls, call_id)
    return state if calls is state.calls else replace(state, calls=calls)


def _with_call(state: QueueState, calls: tuple[WaitingCall, ...], call: WaitingCall) -> QueueState:
    """``state`` holding ``calls`` (in serving order) and ``call`` in its place."""
    index = bisect.bisect_right(calls, call.order_key, key=_order_key)
    return replace(state, calls=(*calls[:index], call, *calls[index:]))


def _order_key(call: WaitingCall) -> tuple[int, int]:
    return call.order_key


def fold(config: QueueConfig, records: Iterable[Recorded[QueueFact]]) -> QueueState:
    """Rebuild a queue from its recorded facts, in stream order."""
    state = QueueState(config=config)
    for recorded in records:
        state = evolve(state, recorded)
    return state
