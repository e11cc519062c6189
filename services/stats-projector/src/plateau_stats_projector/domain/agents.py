"""An agent's state timeline: the spans between state changes, and what they add up to.

An agent's facts all come from its own stream, which the bus keeps in order, so the
timeline is folded one fact at a time: each fact closes the span of the state before it.
The last span stays open (it has no end yet) and counts only in the live view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from plateau_stats_projector.domain.contributions import Contribution, add_duration
from plateau_stats_projector.domain.facts import AgentFact, AgentState
from plateau_stats_projector.domain.metrics import Dimension, Measure, paused_code_measure

_STATE_MEASURE: dict[AgentState, Measure] = {
    AgentState.AVAILABLE: Measure.STATE_AVAILABLE_MS,
    AgentState.RESERVED: Measure.STATE_RESERVED_MS,
    AgentState.ON_CALL: Measure.STATE_ON_CALL_MS,
    AgentState.WRAP_UP: Measure.STATE_WRAP_UP_MS,
    AgentState.PAUSED: Measure.STATE_PAUSED_MS,
    AgentState.UNAVAILABLE: Measure.STATE_UNAVAILABLE_MS,
}


@dataclass(frozen=True)
class AgentStatus:
    """Where an agent is now: its state since when, and what the live view shows of it."""

    agent_id: str
    state: AgentState
    since_ms: int
    version: int
    pause_code: str | None = None
    call_id: str | None = None
    queue_id: str | None = None
    extension: str | None = None
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateSpan:
    """A closed stretch of one state in an agent's timeline."""

    agent_id: str
    state: AgentState
    start_ms: int
    end_ms: int
    #: Stream version of the fact that opened the span: its stable id in the timeline.
    opened_by: int
    pause_code: str | None = None
    call_id: str | None = None


def advance(status: AgentStatus | None, fact: AgentFact) -> tuple[AgentStatus, StateSpan | None]:
    """The agent's status after ``fact``, and the span the fact closed (if one)."""
    span = None
    if status is not None and status.state is not AgentState.LOGGED_OUT:
        # One service stamps the whole stream, but should a later fact carry an earlier
        # time, the span is empty rather than negative.
        end = max(fact.at_ms, status.since_ms)
        span = StateSpan(
            status.agent_id,
            status.state,
            status.since_ms,
            end,
            status.version,
            status.pause_code,
            status.call_id,
        )
    base = status or AgentStatus(fact.agent_id, fact.state, fact.at_ms, fact.stream_version)
    new = replace(
        base,
        state=fact.state,
        since_ms=max(fact.at_ms, status.since_ms) if status else fact.at_ms,
        version=fact.stream_version,
        pause_code=fact.pause_code,
        call_id=fact.call_id,
        queue_id=fact.queue_id,
        extension=fact.extension if fact.extension is not None else base.extension,
        skills=fact.skills if fact.skills is not None else base.skills,
    )
    return new, span


def span_contribution(span: StateSpan) -> Contribution:
    """What a closed span adds to the agent's state measures."""
    out: Contribution = Counter()
    measure = _STATE_MEASURE.get(span.state)
    if measure is None:
        return out
    owner = (Dimension.AGENT, span.agent_id)
    add_duration(out, owner, span.start_ms, span.end_ms, measure)
    if span.state is AgentState.PAUSED and span.pause_code is not None:
        add_duration(out, owner, span.start_ms, span.end_ms, paused_code_measure(span.pause_code))
    return out


def timeline(facts: Iterable[AgentFact]) -> tuple[AgentStatus | None, list[StateSpan]]:
    """Fold an agent's facts (in stream order) into its status and closed spans."""
    status: AgentStatus | None = None
    spans: list[StateSpan] = []
    for fact in sorted(facts, key=lambda f: f.stream_version):
        status, span = advance(status, fact)
        if span is not None:
            spans.append(span)
    return status, spans
