"""The agent state machine: every legal transition, illegal ones refused, time in state, replay."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from plateau_acd.domain.agent import (
    TRANSITIONS,
    AgentState,
    AgentStatus,
    Command,
    CompleteWrapUp,
    Connect,
    EndCall,
    Event,
    Fact,
    IllegalAgentTransitionError,
    Login,
    Logout,
    MarkNotResponding,
    Pause,
    Recorded,
    ReleaseReservation,
    Reserve,
    SetAvailable,
    UnknownPauseCodeError,
    decide,
    evolve,
    fold,
)
from plateau_contracts.events.agents import (
    NOT_RESPONDING,
    AgentBecameAvailable,
    AgentLoggedIn,
    AgentPaused,
    AgentPauseRequested,
    Skill,
    WrapUpCompleted,
    WrapUpStarted,
)
from plateau_contracts.events.calls import AgentRinging

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
CODES = frozenset({"break", "lunch"})


class Journal:
    """An agent with its recorded stream, advanced one command at a time."""

    def __init__(self) -> None:
        self.state = AgentState(agent_id="a-1")
        self.records: list[Recorded[Fact]] = []
        self.now = T0

    def do(self, command: Command, seconds: float = 1) -> list[Event]:
        self.now += timedelta(seconds=seconds)
        events = decide(self.state, command)
        for event in events:
            recorded: Recorded[Fact] = Recorded(event, self.now, len(self.records) + 1)
            self.records.append(recorded)
            self.state = evolve(self.state, recorded)
        return events

    def ring(self, call_id: str = "c-1") -> None:
        self.now += timedelta(seconds=1)
        fact = AgentRinging(
            call_id=call_id, agent_id="a-1", extension="1001", contact="sip:1001@h", sip_call_id="x"
        )
        recorded: Recorded[Fact] = Recorded(
            fact, self.now
        )  # the gateway's fact: no version of this stream
        self.records.append(recorded)
        self.state = evolve(self.state, recorded)


def reach(status: AgentStatus) -> Journal:
    """A journal whose agent is in ``status``."""
    j = Journal()
    if status is AgentStatus.LOGGED_OUT:
        return j
    j.do(Login("1001", (Skill(name="fr", level=3),)))
    if status is AgentStatus.AVAILABLE:
        return j
    if status is AgentStatus.PAUSED:
        j.do(Pause("break", CODES))
        return j
    j.do(Reserve("c-1", "q-1"))
    if status is AgentStatus.RESERVED:
        return j
    if status is AgentStatus.NOT_RESPONDING:
        j.do(MarkNotResponding("c-1", 15))
        return j
    j.ring()
    if status is AgentStatus.RINGING:
        return j
    j.do(Connect("c-1"))
    if status is AgentStatus.ON_CALL:
        return j
    j.do(EndCall("c-1", wrap_up_s=30))
    assert status is AgentStatus.WRAP_UP
    return j


def test_each_helper_state_is_reached() -> None:
    for status in AgentStatus:
        assert reach(status).state.status is status


LEGAL = [
    (AgentStatus.LOGGED_OUT, Login("1001"), AgentStatus.AVAILABLE),
    (
        AgentStatus.LOGGED_OUT,
        Login("1001", pause_code="lunch", allowed_pause_codes=CODES),
        AgentStatus.PAUSED,
    ),
    (AgentStatus.AVAILABLE, Reserve("c-9", "q-1"), AgentStatus.RESERVED),
    (AgentStatus.AVAILABLE, Pause("lunch", CODES), AgentStatus.PAUSED),
    (AgentStatus.AVAILABLE, Logout(), AgentStatus.LOGGED_OUT),
    (AgentStatus.RESERVED, Connect("c-1"), AgentStatus.ON_CALL),
    (AgentStatus.RESERVED, ReleaseReservation("c-1"), AgentStatus.AVAILABLE),
    (AgentStatus.RESERVED, MarkNotResponding("c-1", 15), AgentStatus.NOT_RESPONDING),
    (AgentStatus.RESERVED, EndCall("c-1"), AgentStatus.AVAILABLE),
    (AgentStatus.RESERVED, Logout(), AgentStatus.LOGGED_OUT),
    (AgentStatus.RESERVED, Pause("break", CODES), AgentStatus.RESERVED),
    (AgentStatus.RINGING, Pause("break", CODES), AgentStatus.RINGING),
    (AgentStatus.ON_CALL, Pause("break", CODES), AgentStatus.ON_CALL),
    (AgentStatus.WRAP_UP, Pause("break", CODES), AgentStatus.WRAP_UP),
    (AgentStatus.RINGING, Connect("c-1"), AgentStatus.ON_CALL),
    (AgentStatus.RINGING, ReleaseReservation("c-1"), AgentStatus.AVAILABLE),
    (AgentStatus.RINGING, MarkNotResponding("c-1", 15), AgentStatus.NOT_RESPONDING),
    (AgentStatus.RINGING, EndCall("c-1"), AgentStatus.AVAILABLE),
    (AgentStatus.RINGING, Logout("extension_unregistered"), AgentStatus.LOGGED_OUT),
    (AgentStatus.ON_CALL, EndCall("c-1", 30), AgentStatus.WRAP_UP),
    (AgentStatus.WRAP_UP, CompleteWrapUp("resolved"), AgentStatus.AVAILABLE),
    (AgentStatus.WRAP_UP, CompleteWrapUp(completed_by="timer"), AgentStatus.AVAILABLE),
    (AgentStatus.WRAP_UP, Logout(), AgentStatus.LOGGED_OUT),
    (AgentStatus.PAUSED, SetAvailable(), AgentStatus.AVAILABLE),
    (AgentStatus.PAUSED, Pause("lunch", CODES), AgentStatus.PAUSED),
    (AgentStatus.PAUSED, Logout(), AgentStatus.LOGGED_OUT),
    (AgentStatus.NOT_RESPONDING, SetAvailable(), AgentStatus.AVAILABLE),
    (AgentStatus.NOT_RESPONDING, Pause("break", CODES), AgentStatus.PAUSED),
    (AgentStatus.NOT_RESPONDING, Logout(), AgentStatus.LOGGED_OUT),
]


def test_the_legal_list_covers_the_transition_table() -> None:
    listed = {(status, type(command)) for status, command, _ in LEGAL}
    table = {(status, kind) for status, kinds in TRANSITIONS.items() for kind in kinds}
    assert listed == table


@pytest.mark.parametrize(
    ("start", "command", "end"), LEGAL, ids=lambda v: getattr(v, "value", type(v).__name__)
)
def test_every_legal_transition(start: AgentStatus, command: Command, end: AgentStatus) -> None:
    j = reach(start)
    j.do(command)
    assert j.state.status is end
    if end in (AgentStatus.AVAILABLE, AgentStatus.PAUSED, AgentStatus.LOGGED_OUT):
        assert j.state.call_id is None


ILLEGAL = [
    (AgentStatus.LOGGED_OUT, SetAvailable()),
    (AgentStatus.LOGGED_OUT, Reserve("c-2")),
    (AgentStatus.LOGGED_OUT, Logout()),
    (AgentStatus.AVAILABLE, Login("1001")),
    (AgentStatus.AVAILABLE, SetAvailable()),
    (AgentStatus.AVAILABLE, Connect("c-1")),
    (AgentStatus.RESERVED, Reserve("c-2")),
    (AgentStatus.RINGING, Reserve("c-2")),
    (AgentStatus.ON_CALL, Reserve("c-2")),
    (AgentStatus.ON_CALL, Logout()),
    (AgentStatus.WRAP_UP, Reserve("c-2")),
    (AgentStatus.WRAP_UP, SetAvailable()),
    (AgentStatus.PAUSED, Reserve("c-2")),
    (AgentStatus.NOT_RESPONDING, Reserve("c-2")),
    (AgentStatus.NOT_RESPONDING, CompleteWrapUp()),
]


@pytest.mark.parametrize(
    ("start", "command"), ILLEGAL, ids=lambda v: getattr(v, "value", type(v).__name__)
)
def test_illegal_transitions_name_state_and_command(start: AgentStatus, command: Command) -> None:
    j = reach(start)
    with pytest.raises(IllegalAgentTransitionError) as raised:
        j.do(command)
    assert raised.value.status is start
    assert f"cannot {type(command).__name__}" in str(raised.value)
    assert f"is {start.value}" in str(raised.value)


def test_a_command_for_another_call_is_refused() -> None:
    j = reach(AgentStatus.RINGING)
    with pytest.raises(IllegalAgentTransitionError, match="holds call c-1, not c-2"):
        j.do(Connect("c-2"))


def test_pause_codes_come_from_the_tenant() -> None:
    j = reach(AgentStatus.AVAILABLE)
    with pytest.raises(UnknownPauseCodeError, match=r"'smoke'.*break, lunch"):
        j.do(Pause("smoke", CODES))
    with pytest.raises(UnknownPauseCodeError):
        j.do(Pause(NOT_RESPONDING, CODES | {NOT_RESPONDING}))
    events = j.do(Pause("lunch", CODES, paused_by="supervisor"))
    assert events == [AgentPaused(agent_id="a-1", code="lunch", paused_by="supervisor")]
    assert j.state.pause_code == "lunch"


def test_login_records_login_then_availability() -> None:
    j = Journal()
    events = j.do(Login("1001", (Skill(name="fr", level=3),)))
    assert events == [
        AgentLoggedIn(agent_id="a-1", extension="1001", skills=(Skill(name="fr", level=3),)),
        AgentBecameAvailable(agent_id="a-1"),
    ]
    assert j.state.skill_level("fr") == 3
    assert j.state.skill_level("en") is None


def test_wrap_up_records_its_timer_and_completion() -> None:
    j = reach(AgentStatus.ON_CALL)
    assert j.do(EndCall("c-1", 30)) == [
        WrapUpStarted(agent_id="a-1", call_id="c-1", queue_id="q-1", timeout_s=30)
    ]
    assert j.state.wrap_up_s == 30
    assert j.do(CompleteWrapUp("resolved")) == [
        WrapUpCompleted(
            agent_id="a-1", call_id="c-1", disposition="resolved", completed_by="agent"
        ),
        AgentBecameAvailable(agent_id="a-1"),
    ]


def test_time_in_state_comes_from_recorded_instants() -> None:
    j = Journal()
    j.do(Login("1001"), seconds=0)
    assert j.state.since == T0
    assert j.state.idle_ms(T0 + timedelta(seconds=90)) == 90_000
    j.do(Pause("break", CODES), seconds=120)
    assert j.state.idle_ms(j.now + timedelta(seconds=5)) == 0
    assert j.state.time_in_state_ms(j.now + timedelta(seconds=5)) == 5_000
    assert j.state.totals_ms[AgentStatus.AVAILABLE] == 120_000


def test_calls_today_count_in_the_tenant_day() -> None:
    j = reach(AgentStatus.ON_CALL)
    assert j.state.calls_on(date(2026, 11, 27)) == 1
    # 23:30 UTC is already the next day in Brazzaville (UTC+1): the count starts again.
    j.do(EndCall("c-1", 0))
    j.do(CompleteWrapUp())
    j.now = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    j.do(Reserve("c-2", "q-1"))
    j.do(Connect("c-2"))
    assert j.state.calls_on(date(2026, 11, 28)) == 1
    assert j.state.calls_on(date(2026, 11, 27)) == 0


def test_ringing_fact_for_another_call_is_ignored() -> None:
    j = reach(AgentStatus.RESERVED)
    j.ring("c-other")
    assert j.state.status is AgentStatus.RESERVED


def test_fold_equals_incremental_and_replays_change_nothing() -> None:
    j = reach(AgentStatus.WRAP_UP)
    j.do(CompleteWrapUp("resolved"))
    j.do(Pause("lunch", CODES))
    j.do(SetAvailable())
    j.do(Reserve("c-2", "q-1"))
    j.do(Connect("c-2"))
    rebuilt = fold("a-1", j.records)
    assert rebuilt == j.state
    assert fold("a-1", j.records + j.records) == j.state
    again = j.state
    for recorded in j.records:
        again = evolve(again, recorded)
    assert again == j.state


@pytest.mark.parametrize("completed_by", ["agent", "timer"])
def test_a_pause_asked_during_a_call_starts_when_the_wrap_up_ends(completed_by: str) -> None:
    j = reach(AgentStatus.ON_CALL)
    [requested] = j.do(Pause("lunch", CODES))
    assert isinstance(requested, AgentPauseRequested) and requested.code == "lunch"
    assert j.state.status is AgentStatus.ON_CALL and j.state.pending_pause == "lunch"
    j.do(EndCall("c-1", wrap_up_s=30))
    assert j.state.status is AgentStatus.WRAP_UP
    events = j.do(CompleteWrapUp(completed_by=completed_by))  # type: ignore[arg-type]
    assert [type(e).__name__ for e in events] == ["WrapUpCompleted", "AgentPaused"]
    assert (j.state.status, j.state.pause_code, j.state.pending_pause) == (
        AgentStatus.PAUSED,
        "lunch",
        None,
    )


def test_a_pause_asked_while_reserved_is_taken_if_the_call_never_connects() -> None:
    j = reach(AgentStatus.RESERVED)
    j.do(Pause("break", CODES))
    j.do(ReleaseReservation("c-1"))
    assert (j.state.status, j.state.pause_code) == (AgentStatus.PAUSED, "break")


def test_an_unknown_pause_code_is_refused_during_a_call_too() -> None:
    j = reach(AgentStatus.ON_CALL)
    with pytest.raises(UnknownPauseCodeError):
        j.do(Pause("nap", CODES))
