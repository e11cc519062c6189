"""One agent as the acd sees it: a pure state machine, rebuilt from its ``agent-*`` stream.

``decide(state, command)`` checks a command against the agent's state and returns the
events that record it (payloads of ``plateau_contracts.events.agents``); ``evolve(state,
recorded)`` applies one recorded fact; ``fold(records)`` rebuilds an agent from its stream.
A command the state does not allow raises ``IllegalAgentTransitionError`` naming the state
and the command. Time is never read here: every recorded fact carries the instant it
happened, and time in state is measured between those instants.

States and the commands each allows (``TRANSITIONS``)::

    logged_out      Login
    available       Reserve, Pause, Logout
    reserved        Connect, ReleaseReservation, MarkNotResponding, EndCall, Logout,
                    Pause (taken when the call is over)
    ringing         (same as reserved)
    on_call         EndCall, Pause (taken when the wrap-up ends)
    wrap_up         CompleteWrapUp, Logout, Pause (taken when the wrap-up ends)
    paused          SetAvailable, Pause (change code), Logout
    not_responding  SetAvailable, Pause, Logout

``ringing`` has no event of its own in the agent contracts: it is entered when the
gateway's ``call.agent_ringing`` for the reserved call is applied (an outside fact, without
a version of this stream). An agent rebuilt from its own stream alone shows such a call as
``reserved``, which holds the same call: the one-call rule does not depend on it.

Replays are harmless: a recorded fact whose ``stream_version`` is not above the state's
``version`` changes nothing, and outside facts that no longer match the agent's call are
ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

from plateau_contracts.events.agents import (
    NOT_RESPONDING,
    AgentBecameAvailable,
    AgentBecameBusy,
    AgentLoggedIn,
    AgentLoggedOut,
    AgentNotResponding,
    AgentPaused,
    AgentPauseRequested,
    AgentReserved,
    Skill,
    WrapUpCompleted,
    WrapUpStarted,
)
from plateau_contracts.events.calls import AgentRinging

DEFAULT_TIME_ZONE = "Africa/Brazzaville"

T = TypeVar("T")

LogoutReason = Literal["requested", "supervisor", "extension_unregistered", "session_expired"]
Direction = Literal["inbound", "outbound"]
NotRespondingReason = Literal["ring_no_answer", "rejected", "unreachable"]


@dataclass(frozen=True)
class Recorded(Generic[T]):
    """A fact as recorded: its payload, when it happened and its version in its stream.

    ``stream_version`` is ``None`` for facts of another service's stream (the gateway's
    call facts) that the acd applies for their effect only.
    """

    data: T
    occurred_at: datetime
    stream_version: int | None = None


class AgentStatus(StrEnum):
    """Where an agent is in its working day."""

    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"  # set aside for one call, not yet ringing
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"  # with a tenant pause code
    NOT_RESPONDING = "not_responding"  # paused by the acd after a ring-no-answer


HOLDING_A_CALL = frozenset({AgentStatus.RESERVED, AgentStatus.RINGING, AgentStatus.ON_CALL})


class AgentDomainError(Exception):
    """A command cannot be applied to an agent."""


class IllegalAgentTransitionError(AgentDomainError):
    """A command is not allowed in the agent's current state."""

    def __init__(self, agent_id: str, status: AgentStatus, command: str, why: str = "") -> None:
        self.agent_id = agent_id
        self.status = status
        self.command = command
        because = f" ({why})" if why else ""
        super().__init__(f"cannot {command}: agent {agent_id} is {status}{because}")


class UnknownPauseCodeError(AgentDomainError):
    """A pause code is not one of the tenant's."""

    def __init__(self, code: str, allowed: Iterable[str]) -> None:
        self.code = code
        known = ", ".join(sorted(allowed)) or "none"
        super().__init__(f"unknown pause code {code!r}; the tenant's pause codes are: {known}")


# -- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentState:
    """Everything the acd knows about one agent, as recorded in its stream."""

    agent_id: str
    status: AgentStatus = AgentStatus.LOGGED_OUT
    since: datetime | None = None  # when the current state began
    version: int = 0  # last applied version of ``agent-<agent_id>``
    extension: str | None = None
    skills: tuple[Skill, ...] = ()
    call_id: str | None = None  # the one call held (reserved, ringing, on call, wrap-up)
    queue_id: str | None = None
    pause_code: str | None = None
    #: A pause asked for while holding a call: taken instead of availability afterwards.
    pending_pause: str | None = None
    pending_paused_by: Literal["agent", "supervisor"] = "agent"
    wrap_up_s: int | None = None  # timer of the current wrap-up; None: until completed
    calls_today: int = 0
    calls_day: date | None = None  # the tenant-local day ``calls_today`` counts
    time_zone: str = DEFAULT_TIME_ZONE
    # Milliseconds spent in each state, closed periods only (add ``time_in_state``).
    totals_ms: Mapping[AgentStatus, int] = field(default_factory=dict)

    def time_in_state_ms(self, now: datetime) -> int:
        """Milliseconds since the current state began (0 before any fact)."""
        if self.since is None:
            return 0
        return max(0, int((now - self.since).total_seconds() * 1000))

    def idle_ms(self, now: datetime) -> int:
        """How long the agent has been available; 0 when it is not."""
        return self.time_in_state_ms(now) if self.status is AgentStatus.AVAILABLE else 0

    def calls_on(self, day: date) -> int:
        """Calls taken on ``day`` (tenant-local), as far as the agent's counter tells."""
        return self.calls_today if self.calls_day == day else 0

    def local_day(self, at: datetime) -> date:
        """The tenant-local calendar day of an instant."""
        return at.astimezone(ZoneInfo(self.time_zone)).date()

    def skill_level(self, name: str) -> int | None:
        """The agent's level in a skill, or None without it."""
        for skill in self.skills:
            if skill.name == name:
                return skill.level
        return None

    @property
    def is_logged_in(self) -> bool:
        """Whether the agent has a session."""
        return self.status is not AgentStatus.LOGGED_OUT


# -- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """Start a session on an extension; available at once, or paused with ``pause_code``,
    or (``ready=False``, as the agent desk does) logged in but not yet available."""

    extension: str
    skills: tuple[Skill, ...] = ()
    pause_code: str | None = None
    allowed_pause_codes: frozenset[str] = frozenset()
    ready: bool = True


@dataclass(frozen=True)
class Logout:
    """End the session (a held reservation is released: the caller requeues the call)."""

    reason: LogoutReason = "requested"


@dataclass(frozen=True)
class SetAvailable:
    """Ready for the next call (ends a pause or not-responding)."""


@dataclass(frozen=True)
class Pause:
    """Step away with one of the tenant's pause codes."""

    code: str
    allowed_pause_codes: frozenset[str]
    paused_by: Literal["agent", "supervisor"] = "agent"


@dataclass(frozen=True)
class Reserve:
    """Set the agent aside for one call chosen by the distributor."""

    call_id: str
    queue_id: str | None = None


@dataclass(frozen=True)
class Connect:
    """The agent answered the reserved call (gateway ``call.connected``)."""

    call_id: str
    direction: Direction = "inbound"


@dataclass(frozen=True)
class ReleaseReservation:
    """The reserved call will not reach the agent (busy, declined, connect failed)."""

    call_id: str


@dataclass(frozen=True)
class MarkNotResponding:
    """The reserved call rang out (RONA): the agent is paused ``not_responding``."""

    call_id: str
    ring_timeout_s: int
    reason: NotRespondingReason = "ring_no_answer"


@dataclass(frozen=True)
class EndCall:
    """The agent's call ended: wrap-up after a conversation, available if it never connected."""

    call_id: str
    wrap_up_s: int | None = None


@dataclass(frozen=True)
class CompleteWrapUp:
    """After-call work is done, by the agent (with a disposition) or by the timer."""

    disposition: str | None = None
    completed_by: Literal["agent", "timer"] = "agent"


Command = (
    Login
    | Logout
    | SetAvailable
    | Pause
    | Reserve
    | Connect
    | ReleaseReservation
    | MarkNotResponding
    | EndCall
    | CompleteWrapUp
)

Event = (
    AgentLoggedIn
    | AgentLoggedOut
    | AgentBecameAvailable
    | AgentPaused
    | AgentPauseRequested
    | AgentNotResponding
    | AgentReserved
    | AgentBecameBusy
    | WrapUpStarted
    | WrapUpCompleted
)

#: Facts the agent applies: its own events and the gateway's ringing fact.
Fact = Event | AgentRinging

_WITH_CALL: frozenset[type[Command]] = frozenset(
    {Connect, ReleaseReservation, MarkNotResponding, EndCall, Logout, Pause}
)

#: The only legal transitions: the commands each state allows.
TRANSITIONS: Mapping[AgentStatus, frozenset[type[Command]]] = {
    AgentStatus.LOGGED_OUT: frozenset({Login}),
    AgentStatus.AVAILABLE: frozenset({Reserve, Pause, Logout}),
    AgentStatus.RESERVED: _WITH_CALL,
    AgentStatus.RINGING: _WITH_CALL,
    AgentStatus.ON_CALL: frozenset({EndCall, Pause}),
    AgentStatus.WRAP_UP: frozenset({CompleteWrapUp, Logout, Pause}),
    AgentStatus.PAUSED: frozenset({SetAvailable, Pause, Logout}),
    AgentStatus.NOT_RESPONDING: frozenset({SetAvailable, Pause, Logout}),
}


def command_name(command: Command) -> str:
    """The command's name as the errors show it (``SetAvailable``)."""
    return type(command).__name__


def is_allowed(status: AgentStatus, command: Command) -> bool:
    """Whether the transition table allows ``command`` in ``status``."""
    return type(command) in TRANSITIONS[status]


# -- decide -----------------------------------------------------------------------------


def decide(state: AgentState, command: Command) -> list[Event]:
    """The events that record ``command`` on the agent; raises ``AgentDomainError``."""
    agent_id = state.agent_id
    if not is_allowed(state.status, command):
        raise IllegalAgentTransitionError(agent_id, state.status, command_name(command))
    match command:
        case Login() | Logout() | SetAvailable() | Pause() | Reserve():
            return _decide_session(state, command)
        case Connect() | ReleaseReservation() | MarkNotResponding() | EndCall() | CompleteWrapUp():
            return _decide_call(state, command)
    raise TypeError(f"not an agent command: {command!r}")  # pragma: no cover


def _decide_session(
    state: AgentState, command: Login | Logout | SetAvailable | Pause | Reserve
) -> list[Event]:
    agent_id = state.agent_id
    match command:
        case Login():
            return _decide_login(state, command)
        case Logout():
            return [AgentLoggedOut(agent_id=agent_id, reason=command.reason)]
        case SetAvailable():
            return [AgentBecameAvailable(agent_id=agent_id)]
        case Pause():
            _check_pause_code(command.code, command.allowed_pause_codes)
            if state.status in HOLDING_A_CALL or state.status is AgentStatus.WRAP_UP:
                return [
                    AgentPauseRequested(
                        agent_id=agent_id, code=command.code, paused_by=command.paused_by
                    )
                ]
            return [AgentPaused(agent_id=agent_id, code=command.code, paused_by=command.paused_by)]
        case Reserve():
            return [
                AgentReserved(agent_id=agent_id, call_id=command.call_id, queue_id=command.queue_id)
            ]
    raise TypeError(f"not a session command: {command!r}")  # pragma: no cover


def _decide_call(
    state: AgentState,
    command: Connect | ReleaseReservation | MarkNotResponding | EndCall | CompleteWrapUp,
) -> list[Event]:
    agent_id = state.agent_id
    match command:
        case Connect():
            _check_call(state, command)
            return [
                AgentBecameBusy(
                    agent_id=agent_id,
                    call_id=command.call_id,
                    queue_id=state.queue_id,
                    direction=command.direction,
                )
            ]
        case ReleaseReservation():
            _check_call(state, command)
            return [_free_again(state)]
        case MarkNotResponding():
            _check_call(state, command)
            return [
                AgentNotResponding(
                    agent_id=agent_id,
                    call_id=command.call_id,
                    queue_id=state.queue_id,
                    ring_timeout_s=command.ring_timeout_s,
                    reason=command.reason,
                )
            ]
        case EndCall():
            _check_call(state, command)
            if state.status is not AgentStatus.ON_CALL:
                # The caller left before the agent answered: nothing to wrap up.
                return [_free_again(state)]
            return [
                WrapUpStarted(
                    agent_id=agent_id,
                    call_id=command.call_id,
                    queue_id=state.queue_id,
                    timeout_s=command.wrap_up_s,
                )
            ]
        case CompleteWrapUp():
            return [
                WrapUpCompleted(
                    agent_id=agent_id,
                    call_id=state.call_id or "",
                    disposition=command.disposition,
                    completed_by=command.completed_by,
                ),
                _free_again(state),
            ]
    raise TypeError(f"not an agent command: {command!r}")  # pragma: no cover


def _free_again(state: AgentState) -> AgentBecameAvailable | AgentPaused:
    """What follows a call: availability, or the pause asked for during it."""
    if state.pending_pause is not None:
        return AgentPaused(
            agent_id=state.agent_id, code=state.pending_pause, paused_by=state.pending_paused_by
        )
    return AgentBecameAvailable(agent_id=state.agent_id)


def _decide_login(state: AgentState, command: Login) -> list[Event]:
    logged_in = AgentLoggedIn(
        agent_id=state.agent_id, extension=command.extension, skills=command.skills
    )
    if command.pause_code is None:
        if not command.ready:
            return [logged_in]
        return [logged_in, AgentBecameAvailable(agent_id=state.agent_id)]
    _check_pause_code(command.pause_code, command.allowed_pause_codes)
    return [
        logged_in,
        AgentPaused(agent_id=state.agent_id, code=command.pause_code, paused_by="agent"),
    ]


def _check_pause_code(code: str, allowed: frozenset[str]) -> None:
    # ``not_responding`` is the acd's own code: an agent cannot choose it.
    if code == NOT_RESPONDING or code not in allowed:
        raise UnknownPauseCodeError(code, allowed)


def _check_call(
    state: AgentState, command: Connect | ReleaseReservation | MarkNotResponding | EndCall
) -> None:
    if state.call_id != command.call_id:
        raise IllegalAgentTransitionError(
            state.agent_id,
            state.status,
            command_name(command),
            f"it holds call {state.call_id}, not {command.call_id}",
        )


# -- evolve -----------------------------------------------------------------------------


def evolve(state: AgentState, recorded: Recorded[Fact]) -> AgentState:
    """The agent after one recorded fact; a replayed or stale fact changes nothing."""
    fact = recorded.data
    at = recorded.occurred_at
    if isinstance(fact, AgentRinging):
        # Only for the reservation in progress: a replayed ringing of an earlier
        # reservation of the same call (before a requeue) happened before it began.
        if (
            state.status is AgentStatus.RESERVED
            and state.call_id == fact.call_id
            and state.since is not None
            and at >= state.since
        ):
            return _enter(state, AgentStatus.RINGING, at)
        return state
    if recorded.stream_version is not None:
        if recorded.stream_version <= state.version:
            return state
        state = replace(state, version=recorded.stream_version)
    return _apply(state, fact, at)


def _apply(state: AgentState, fact: Event, at: datetime) -> AgentState:
    match fact:
        case (
            AgentReserved()
            | AgentBecameBusy()
            | WrapUpStarted()
            | WrapUpCompleted()
            | AgentPauseRequested()
        ):
            return _apply_call(state, fact, at)
    match fact:
        case AgentLoggedIn():
            # Between login and its following availability or pause the agent takes no call.
            new = _enter(state, AgentStatus.PAUSED, at)
            return replace(new, extension=fact.extension, skills=fact.skills, pause_code=None)
        case AgentLoggedOut():
            new = _without_call(_enter(state, AgentStatus.LOGGED_OUT, at))
            return replace(new, extension=None, skills=(), pause_code=None)
        case AgentBecameAvailable():
            return replace(_without_call(_enter(state, AgentStatus.AVAILABLE, at)), pause_code=None)
        case AgentPaused():
            status = (
                AgentStatus.NOT_RESPONDING if fact.code == NOT_RESPONDING else AgentStatus.PAUSED
            )
            return replace(_without_call(_enter(state, status, at)), pause_code=fact.code)
        case AgentNotResponding():
            new = _without_call(_enter(state, AgentStatus.NOT_RESPONDING, at))
            return replace(new, pause_code=NOT_RESPONDING)
    raise TypeError(f"not an agent fact: {fact!r}")  # pragma: no cover


def _apply_call(
    state: AgentState,
    fact: AgentReserved | AgentBecameBusy | WrapUpStarted | WrapUpCompleted | AgentPauseRequested,
    at: datetime,
) -> AgentState:
    match fact:
        case AgentReserved():
            new = _enter(state, AgentStatus.RESERVED, at)
            return replace(new, call_id=fact.call_id, queue_id=fact.queue_id)
        case AgentBecameBusy():
            day = state.local_day(at)
            count = state.calls_on(day) + 1
            new = _enter(state, AgentStatus.ON_CALL, at)
            return replace(
                new,
                call_id=fact.call_id,
                queue_id=fact.queue_id or state.queue_id,
                calls_today=count,
                calls_day=day,
            )
        case WrapUpStarted():
            new = _enter(state, AgentStatus.WRAP_UP, at)
            return replace(new, call_id=fact.call_id, wrap_up_s=fact.timeout_s)
        case WrapUpCompleted():
            # Leaves wrap-up; the availability or pause that follows sets the next state.
            return replace(state, wrap_up_s=None)
        case AgentPauseRequested():
            return replace(state, pending_pause=fact.code, pending_paused_by=fact.paused_by)
    raise TypeError(f"not an agent fact: {fact!r}")  # pragma: no cover


def _without_call(state: AgentState) -> AgentState:
    return replace(state, call_id=None, queue_id=None, wrap_up_s=None, pending_pause=None)


def _enter(state: AgentState, status: AgentStatus, at: datetime) -> AgentState:
    totals = dict(state.totals_ms)
    if state.since is not None:
        totals[state.status] = totals.get(state.status, 0) + state.time_in_state_ms(at)
    return replace(state, status=status, since=at, totals_ms=totals)


def fold(
    agent_id: str, records: Iterable[Recorded[Fact]], time_zone: str = DEFAULT_TIME_ZONE
) -> AgentState:
    """Rebuild an agent from its recorded facts, in stream order."""
    state = AgentState(agent_id=agent_id, time_zone=time_zone)
    for recorded in records:
        state = evolve(state, recorded)
    return state
