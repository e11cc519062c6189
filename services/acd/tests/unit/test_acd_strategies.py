"""Routing strategies, with worked examples: who wins, the candidates' scores and the reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from plateau_acd.domain.agent import AgentState, AgentStatus
from plateau_acd.domain.queue import QueueConfig, SkillRequirement, Strategy, WaitingCall
from plateau_acd.domain.strategies import choose, is_eligible
from plateau_contracts.events.agents import Skill

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
CALL = WaitingCall(call_id="c-1", priority=0, seq=0, enqueued_at=NOW - timedelta(seconds=30))


def agent(
    agent_id: str,
    idle_s: float,
    *,
    status: AgentStatus = AgentStatus.AVAILABLE,
    skills: dict[str, int] | None = None,
    calls_today: int = 0,
) -> AgentState:
    return AgentState(
        agent_id=agent_id,
        status=status,
        since=NOW - timedelta(seconds=idle_s),
        extension=agent_id[2:],
        skills=tuple(Skill(name=n, level=lv) for n, lv in (skills or {}).items()),
        calls_today=calls_today,
        calls_day=NOW.date(),
    )


def queue(strategy: Strategy, *skills: SkillRequirement) -> QueueConfig:
    return QueueConfig(queue_id="q-1", strategy=strategy, required_skills=skills)


def test_longest_idle_picks_the_agent_idle_longest() -> None:
    agents = [agent("a-1", 120), agent("a-2", 340), agent("a-3", 5)]
    choice = choose(CALL, queue(Strategy.LONGEST_IDLE), agents, NOW)
    assert choice is not None
    assert choice.agent_id == "a-2"
    assert [c.agent_id for c in choice.candidates] == ["a-2", "a-1", "a-3"]
    assert [c.score for c in choice.candidates] == [340.0, 120.0, 5.0]
    assert choice.candidates[0].idle_ms == 340_000
    assert choice.reason == "longest idle: a-2 idle 340 s, next a-1 idle 120 s"


def test_longest_idle_tie_goes_to_the_lower_agent_id() -> None:
    choice = choose(CALL, queue(Strategy.LONGEST_IDLE), [agent("a-9", 60), agent("a-3", 60)], NOW)
    assert choice is not None
    assert choice.agent_id == "a-3"
    assert choice.reason == "longest idle: a-3 idle 60 s, tied with a-9; lower agent id wins"


def test_only_available_agents_are_candidates() -> None:
    agents = [
        agent("a-1", 500, status=AgentStatus.PAUSED),
        agent("a-2", 500, status=AgentStatus.RESERVED),
        agent("a-3", 1),
    ]
    choice = choose(CALL, queue(Strategy.LONGEST_IDLE), agents, NOW)
    assert choice is not None
    assert [c.agent_id for c in choice.candidates] == ["a-3"]
    assert choice.reason == "longest idle: a-3 idle 1 s"
    assert choose(CALL, queue(Strategy.LONGEST_IDLE), agents[:2], NOW) is None


def test_round_robin_follows_the_cursor_and_wraps() -> None:
    agents = [agent("a-3", 1), agent("a-1", 100), agent("a-2", 50)]
    config = queue(Strategy.ROUND_ROBIN)
    first = choose(CALL, config, agents, NOW, cursor=None)
    assert first is not None
    assert (first.agent_id, first.reason) == (
        "a-1",
        "round robin: a-1 starts the rotation (first by agent id)",
    )
    after_one = choose(CALL, config, agents, NOW, cursor="a-1")
    assert after_one is not None
    assert after_one.agent_id == "a-2"
    assert [(c.agent_id, c.score) for c in after_one.candidates] == [
        ("a-2", 3.0),
        ("a-3", 2.0),
        ("a-1", 1.0),
    ]
    assert after_one.reason == "round robin: a-2 is next after a-1"
    wrapped = choose(CALL, config, agents, NOW, cursor="a-3")
    assert wrapped is not None
    assert wrapped.agent_id == "a-1"
    assert wrapped.reason == "round robin: a-1 starts the rotation again after a-3"


def test_round_robin_skips_a_cursor_agent_that_is_gone() -> None:
    # a-2 (the cursor) is on a call: the next id after it still comes first.
    choice = choose(
        CALL, queue(Strategy.ROUND_ROBIN), [agent("a-1", 9), agent("a-4", 1)], NOW, "a-2"
    )
    assert choice is not None
    assert choice.agent_id == "a-4"


def test_fewest_calls_then_longest_idle() -> None:
    agents = [
        agent("a-1", 300, calls_today=4),
        agent("a-2", 10, calls_today=1),
        agent("a-3", 90, calls_today=1),
    ]
    choice = choose(CALL, queue(Strategy.FEWEST_CALLS), agents, NOW)
    assert choice is not None
    assert choice.agent_id == "a-3"
    assert [(c.agent_id, c.score) for c in choice.candidates] == [
        ("a-3", -1.0),
        ("a-2", -1.0),
        ("a-1", -4.0),
    ]
    assert choice.reason == "fewest calls today: a-3 with 1, tied with a-2; idle 90 s against 10 s"


def test_fewest_calls_counts_only_today() -> None:
    yesterday = agent("a-1", 5, calls_today=9)
    yesterday = replace(yesterday, calls_day=NOW.date() - timedelta(days=1))
    choice = choose(
        CALL, queue(Strategy.FEWEST_CALLS), [yesterday, agent("a-2", 5, calls_today=2)], NOW
    )
    assert choice is not None
    assert choice.agent_id == "a-1"
    assert choice.reason == "fewest calls today: a-1 with 0, next a-2 with 2"


def test_skills_based_best_level_first_then_longest_idle() -> None:
    config = queue(Strategy.SKILLS_BASED, SkillRequirement("french", 2))
    agents = [
        agent("a-1", 400, skills={"french": 3}),
        agent("a-2", 20, skills={"french": 7}),
        agent("a-3", 200, skills={"french": 7}),
        agent("a-4", 999, skills={"french": 1}),  # below the queue's minimum
        agent("a-5", 999, skills={"english": 9}),  # lacks the skill
    ]
    choice = choose(CALL, config, agents, NOW)
    assert choice is not None
    assert choice.agent_id == "a-3"
    assert [(c.agent_id, c.skill_level) for c in choice.candidates] == [
        ("a-3", 7),
        ("a-2", 7),
        ("a-1", 3),
    ]
    assert choice.reason == "best french level: a-3 at 7, tied with a-2; idle 200 s against 20 s"


def test_skills_based_clear_winner_and_full_tie() -> None:
    config = queue(Strategy.SKILLS_BASED, SkillRequirement("french"))
    clear = choose(
        CALL,
        config,
        [agent("a-1", 5, skills={"french": 9}), agent("a-2", 50, skills={"french": 4})],
        NOW,
    )
    assert clear is not None
    assert clear.reason == "best french level: a-1 at 9, next a-2 at 4"
    tie = choose(
        CALL,
        config,
        [agent("a-2", 5, skills={"french": 4}), agent("a-1", 5, skills={"french": 4})],
        NOW,
    )
    assert tie is not None
    assert tie.agent_id == "a-1"
    assert (
        tie.reason
        == "best french level: a-1 at 4, tied with a-2; same idle 5 s; lower agent id wins"
    )


def test_call_skills_are_required_too() -> None:
    call = WaitingCall(
        call_id="c-2", priority=0, seq=0, enqueued_at=NOW, required_skills=("lingala",)
    )
    config = queue(Strategy.LONGEST_IDLE)
    assert not is_eligible(agent("a-1", 9), call, config)
    assert is_eligible(agent("a-2", 9, skills={"lingala": 1}), call, config)
