"""Routing strategies: which of the agents free for a call takes it, and why.

Every strategy ranks *all* the eligible agents and returns them best first, each with the
score the strategy gave (highest wins), plus a sentence saying why the winner won. Those
fill ``call.agent_reserved``'s ``candidates`` and ``decision``.

Scores and tie-breaks (always ending on the agent id, so a decision is deterministic and
a replay gives the same one):

* ``longest_idle`` (default): score = seconds available; ties by agent id.
* ``round_robin``: agents in agent-id order, starting after the last agent the queue
  chose (its cursor, recorded by ``call.agent_reserved``, so a replay continues the same
  rotation); score = places before the end of the rotation.
* ``fewest_calls``: score = minus calls taken today (tenant-local day); ties by longest
  idle, then agent id.
* ``skills_based``: score = level in the queue's main skill (its first required skill, or
  the call's); ties by longest idle, then agent id.

Eligibility (``is_eligible``) is the same for all: available, with every skill the queue
requires at its minimum level and every skill the call requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from plateau_acd.domain.agent import AgentState, AgentStatus
from plateau_acd.domain.queue import QueueConfig, Strategy, WaitingCall
from plateau_contracts.events.routing import RoutingCandidate


@dataclass(frozen=True)
class Choice:
    """A strategy's decision: the winner, everyone considered (best first) and why."""

    agent_id: str
    strategy: Strategy
    candidates: tuple[RoutingCandidate, ...]
    reason: str


def is_eligible(agent: AgentState, call: WaitingCall, config: QueueConfig) -> bool:
    """Whether the agent may take the call now."""
    if agent.status is not AgentStatus.AVAILABLE:
        return False
    for need in config.required_skills:
        level = agent.skill_level(need.name)
        if level is None or level < need.min_level:
            return False
    return all(agent.skill_level(name) is not None for name in call.required_skills)


def main_skill(call: WaitingCall, config: QueueConfig) -> str | None:
    """The skill whose level ranks agents in a skills-based queue."""
    if config.required_skills:
        return config.required_skills[0].name
    return call.required_skills[0] if call.required_skills else None


def choose(
    call: WaitingCall,
    config: QueueConfig,
    agents: Iterable[AgentState],
    now: datetime,
    cursor: str | None = None,
) -> Choice | None:
    """The agent that takes ``call`` under the queue's strategy; None if nobody is eligible."""
    eligible = [agent for agent in agents if is_eligible(agent, call, config)]
    if not eligible:
        return None
    match config.strategy:
        case Strategy.LONGEST_IDLE:
            return longest_idle(eligible, now)
        case Strategy.ROUND_ROBIN:
            return round_robin(eligible, now, cursor)
        case Strategy.FEWEST_CALLS:
            return fewest_calls(eligible, now)
        case Strategy.SKILLS_BASED:
            return skills_based(eligible, now, main_skill(call, config))
    raise ValueError(f"unknown strategy {config.strategy!r}")  # pragma: no cover


def longest_idle(agents: Sequence[AgentState], now: datetime) -> Choice:
    """The agent available the longest."""
    ranked = sorted(agents, key=lambda a: (-a.idle_ms(now), a.agent_id))
    candidates = tuple(candidate(a, now, a.idle_ms(now) / 1000) for a in ranked)
    winner = ranked[0]
    reason = f"longest idle: {winner.agent_id} idle {_secs(winner, now)}"
    if len(ranked) > 1:
        second = ranked[1]
        if second.idle_ms(now) == winner.idle_ms(now):
            reason += f", tied with {second.agent_id}; lower agent id wins"
        else:
            reason += f", next {second.agent_id} idle {_secs(second, now)}"
    return Choice(winner.agent_id, Strategy.LONGEST_IDLE, candidates, reason)


def round_robin(agents: Sequence[AgentState], now: datetime, cursor: str | None) -> Choice:
    """The next agent in agent-id order after the last one the queue chose."""
    by_id = sorted(agents, key=lambda a: a.agent_id)
    after = [a for a in by_id if cursor is None or a.agent_id > cursor]
    before = [a for a in by_id if cursor is not None and a.agent_id <= cursor]
    ranked = after + before
    count = len(ranked)
    candidates = tuple(candidate(a, now, float(count - i)) for i, a in enumerate(ranked))
    winner = ranked[0]
    if cursor is None:
        reason = f"round robin: {winner.agent_id} starts the rotation (first by agent id)"
    elif not after:
        reason = f"round robin: {winner.agent_id} starts the rotation again after {cursor}"
    else:
        reason = f"round robin: {winner.agent_id} is next after {cursor}"
    return Choice(winner.agent_id, Strategy.ROUND_ROBIN, candidates, reason)


def fewest_calls(agents: Sequence[AgentState], now: datetime) -> Choice:
    """The agent with the fewest calls today; ties by longest idle, then agent id."""

    def calls(agent: AgentState) -> int:
        return agent.calls_on(agent.local_day(now))

    ranked = sorted(agents, key=lambda a: (calls(a), -a.idle_ms(now), a.agent_id))
    candidates = tuple(candidate(a, now, float(-calls(a))) for a in ranked)
    winner = ranked[0]
    reason = f"fewest calls today: {winner.agent_id} with {calls(winner)}"
    if len(ranked) > 1:
        second = ranked[1]
        if calls(second) != calls(winner):
            reason += f", next {second.agent_id} with {calls(second)}"
        else:
            reason += f", tied with {second.agent_id}; " + _idle_tie(winner, second, now)
    return Choice(winner.agent_id, Strategy.FEWEST_CALLS, candidates, reason)


def skills_based(agents: Sequence[AgentState], now: datetime, skill: str | None) -> Choice:
    """The agent with the best level in the main skill; ties by longest idle, then agent id."""

    def level(agent: AgentState) -> int:
        found = agent.skill_level(skill) if skill is not None else None
        return found or 0

    ranked = sorted(agents, key=lambda a: (-level(a), -a.idle_ms(now), a.agent_id))
    candidates = tuple(candidate(a, now, float(level(a)), level(a)) for a in ranked)
    winner = ranked[0]
    reason = f"best {skill or 'skill'} level: {winner.agent_id} at {level(winner)}"
    if len(ranked) > 1:
        second = ranked[1]
        if level(second) != level(winner):
            reason += f", next {second.agent_id} at {level(second)}"
        else:
            reason += f", tied with {second.agent_id}; " + _idle_tie(winner, second, now)
    return Choice(winner.agent_id, Strategy.SKILLS_BASED, candidates, reason)


def _idle_tie(winner: AgentState, second: AgentState, now: datetime) -> str:
    if winner.idle_ms(now) == second.idle_ms(now):
        return f"same idle {_secs(winner, now)}; lower agent id wins"
    return f"idle {_secs(winner, now)} against {_secs(second, now)}"


def candidate(
    agent: AgentState, now: datetime, score: float, skill_level: int | None = None
) -> RoutingCandidate:
    """How an agent appears among a decision's candidates."""
    return RoutingCandidate(
        agent_id=agent.agent_id,
        score=score,
        idle_ms=agent.idle_ms(now),
        skill_level=skill_level,
        calls_today=agent.calls_on(agent.local_day(now)),
    )


def _secs(agent: AgentState, now: datetime) -> str:
    return f"{agent.idle_ms(now) / 1000:g} s"
