"""Agent timelines, the event-to-fact mapping and the metric formulas."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plateau_contracts.envelope import Envelope, new_event_id
from plateau_contracts.events.agents import AgentNotResponding, AgentPaused
from plateau_contracts.events.calls import CallEnded, EndCause, EndedBy
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.routing import CallQueued
from plateau_stats_projector.domain.agents import span_contribution, timeline
from plateau_stats_projector.domain.contributions import total
from plateau_stats_projector.domain.facts import (
    AgentFact,
    AgentState,
    CallFactKind,
    facts_of,
)
from plateau_stats_projector.domain.intervals import to_ms
from plateau_stats_projector.domain.metrics import (
    Dimension,
    Measure,
    abandonment_rate,
    aht_ms,
    answer_bucket_measure,
    answer_bucket_of,
    asa_ms,
    effective_threshold_s,
    occupancy,
    paused_code_measure,
    service_level,
)

pytestmark = pytest.mark.unit

I0 = to_ms(datetime(2026, 5, 4, 8, 0, tzinfo=UTC))
MIN = 60_000


def envelope(event: StreamedEvent, version: int = 1) -> Envelope:
    now = datetime(2026, 5, 4, 8, 0, 1, 500, tzinfo=UTC)
    return Envelope(
        event_id=new_event_id(),
        type=event.event_type,
        schema_version=event.schema_version,
        stream=event.stream_id("acme"),
        stream_version=version,
        tenant="acme",
        occurred_at=now,
        recorded_at=now,
        data=event.model_dump(mode="json"),
    )


def test_events_map_to_the_facts_the_projections_read() -> None:
    queued = facts_of(
        envelope(CallQueued(queue_id="q1", call_id="c1", direction="inbound", priority=0))
    )
    assert queued.call is not None and queued.agent is None
    assert (queued.call.kind, queued.call.queue_id, queued.call.stream) == (
        CallFactKind.QUEUED,
        "q1",
        "queue-acme:q1",
    )
    assert queued.call.at_ms == I0 + 1000  # floored to the millisecond
    ended = facts_of(
        envelope(CallEnded(call_id="c1", cause=EndCause.CALLER_HANGUP, ended_by=EndedBy.CALLER))
    )
    assert ended.call is not None and ended.call.detail == "caller_hangup"
    rona = facts_of(envelope(AgentNotResponding(agent_id="a1", call_id="c1", ring_timeout_s=15)))
    assert rona.agent is not None
    assert (rona.agent.state, rona.agent.pause_code) == (AgentState.PAUSED, "not_responding")
    paused = facts_of(envelope(AgentPaused(agent_id="a1", code="lunch", paused_by="agent")))
    assert paused.agent is not None and paused.agent.pause_code == "lunch"


def test_an_unknown_event_type_is_no_fact() -> None:
    unknown = envelope(AgentPaused(agent_id="a1", code="lunch", paused_by="agent"))
    unknown = unknown.model_copy(update={"type": "agent.teleported"})
    assert facts_of(unknown).agent is None


def test_an_agents_states_are_spans_split_at_boundaries_with_pause_codes() -> None:
    facts = [
        AgentFact("a1", AgentState.UNAVAILABLE, I0, 1),
        AgentFact("a1", AgentState.AVAILABLE, I0 + MIN, 2),
        AgentFact("a1", AgentState.PAUSED, I0 + 10 * MIN, 3, pause_code="lunch"),
        AgentFact("a1", AgentState.AVAILABLE, I0 + 40 * MIN, 4),
        AgentFact("a1", AgentState.LOGGED_OUT, I0 + 50 * MIN, 5),
        AgentFact("a1", AgentState.UNAVAILABLE, I0 + 70 * MIN, 6),
    ]
    status, spans = timeline(reversed(facts))  # stream order comes from versions
    assert status is not None and status.state is AgentState.UNAVAILABLE
    assert [(s.state, s.opened_by) for s in spans] == [
        (AgentState.UNAVAILABLE, 1),
        (AgentState.AVAILABLE, 2),
        (AgentState.PAUSED, 3),
        (AgentState.AVAILABLE, 4),
    ]
    measures = total(span_contribution(s) for s in spans)
    by = {(k.interval_ms - I0, k.measure): v for k, v in measures.items()}
    assert by[(0, Measure.STATE_PAUSED_MS)] == 5 * MIN
    assert by[(15 * MIN, Measure.STATE_PAUSED_MS)] == 15 * MIN
    assert by[(30 * MIN, paused_code_measure("lunch"))] == 10 * MIN
    assert by[(0, Measure.STATE_AVAILABLE_MS)] == 9 * MIN
    assert sum(v for (_, m), v in by.items() if m.startswith("state_") and ":" not in m) == 50 * MIN
    assert all(k.dimension is Dimension.AGENT for k in measures)


@given(
    st.lists(
        st.tuples(st.sampled_from(list(AgentState)), st.integers(0, 3 * 3_600_000)), max_size=20
    )
)
def test_an_agents_closed_spans_cover_the_logged_in_time_exactly(
    changes: list[tuple[AgentState, int]],
) -> None:
    moments = sorted(at for _, at in changes)
    facts = [
        AgentFact(
            "a1", state, I0 + at, n + 1, pause_code="break" if state is AgentState.PAUSED else None
        )
        for n, ((state, _), at) in enumerate(zip(changes, moments, strict=True))
    ]
    _, spans = timeline(facts)
    logged_in = sum(
        b.at_ms - a.at_ms
        for a, b in itertools.pairwise(facts)
        if a.state is not AgentState.LOGGED_OUT
    )
    assert sum(s.end_ms - s.start_ms for s in spans) == logged_in
    measured = total(span_contribution(s) for s in spans)
    assert sum(v for k, v in measured.items() if ":" not in k.measure) == logged_in


def test_the_metric_formulas() -> None:
    measures = {
        Measure.OFFERED: 10,
        Measure.ANSWERED: 6,
        Measure.ANSWER_WAIT_MS: 60_000,
        answer_bucket_measure(5): 1,
        answer_bucket_measure(20): 3,
        answer_bucket_measure(60): 1,
        Measure.ABANDONED: 4,
        Measure.ABANDONED_SHORT: 1,
        Measure.HANDLED: 5,
        Measure.HANDLE_MS: 1_000_000,
        Measure.STATE_AVAILABLE_MS: 100,
        Measure.STATE_ON_CALL_MS: 250,
        Measure.STATE_WRAP_UP_MS: 50,
    }
    assert service_level(measures, 20).value == Fraction(4, 9)
    assert service_level(measures, 25).value == Fraction(4, 9)  # 25 s is read as 20 s
    assert effective_threshold_s(25) == 20 and effective_threshold_s(1) == 5
    assert service_level(measures, 60).value == Fraction(5, 9)
    assert (answer_bucket_of(0), answer_bucket_of(5_001), answer_bucket_of(300_001)) == (
        answer_bucket_measure(5),
        answer_bucket_measure(10),
        None,
    )
    assert asa_ms(measures).value == 10_000
    assert aht_ms(measures).value == 200_000
    assert abandonment_rate(measures).value == Fraction(3, 9)
    assert occupancy(measures).value == Fraction(3, 4)
    assert asa_ms({}).value is None
    assert (service_level(measures, 20).metric, service_level(measures, 20).version) == (
        "service_level",
        1,
    )
