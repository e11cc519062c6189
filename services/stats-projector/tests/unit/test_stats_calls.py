"""A call's detail record and contribution, from its facts in any order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plateau_stats_projector.domain.calls import assemble, contribution
from plateau_stats_projector.domain.contributions import Key, delta, total
from plateau_stats_projector.domain.facts import CallFact, CallFactKind
from plateau_stats_projector.domain.intervals import to_ms
from plateau_stats_projector.domain.metrics import (
    Dimension,
    Measure,
    answer_bucket_measure,
    answered_within,
)

pytestmark = pytest.mark.unit

K = CallFactKind
T0 = to_ms(datetime(2026, 5, 4, 10, 14, 50, tzinfo=UTC))  # 10 s before a boundary
I0 = to_ms(datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
I1 = I0 + 900_000
I2 = I1 + 900_000


class Script:
    """Facts of one call, as the gateway, the acd and the agents' streams would give them."""

    def __init__(self, call_id: str = "c1") -> None:
        self.call_id = call_id
        self.facts: list[CallFact] = []
        self._versions: dict[str, int] = {}

    def add(self, stream: str, kind: CallFactKind, at: int, **more: str | None) -> Script:
        self._versions[stream] = self._versions.get(stream, 0) + 1
        self.facts.append(CallFact(self.call_id, kind, at, stream, self._versions[stream], **more))
        return self

    def call(self, kind: CallFactKind, at: int, **more: str | None) -> Script:
        return self.add(f"call-{self.call_id}", kind, at, **more)

    def queue(self, queue: str, kind: CallFactKind, at: int, **more: str | None) -> Script:
        return self.add(f"queue-{queue}", kind, at, queue_id=queue, **more)

    def agent(self, agent: str, kind: CallFactKind, at: int) -> Script:
        return self.add(f"agent-{agent}", kind, at, agent_id=agent)


def answered_call() -> Script:
    """Queued 10 s before a boundary, answered after 30 s, 20 s hold, talk across 10:30."""
    s = Script()
    s.call(K.OFFERED, T0 - 1000, direction="inbound", ani="+242066000001", dnis="+242053000100")
    s.queue("q1", K.QUEUED, T0, direction="inbound")
    s.queue("q1", K.RESERVED, T0 + 25_000, agent_id="a1")
    s.call(K.CONNECTED, T0 + 30_000, agent_id="a1", queue_id="q1")
    s.call(K.HELD, T0 + 100_000, agent_id="a1")
    s.call(K.RESUMED, T0 + 120_000, agent_id="a1")
    s.call(K.ENDED, T0 + 1_000_000, agent_id="a1", detail="caller_hangup")
    s.agent("a1", K.WRAP_UP_STARTED, T0 + 1_000_000)
    s.agent("a1", K.WRAP_UP_COMPLETED, T0 + 1_030_000)
    return s


def measures(facts: list[CallFact], dimension: Dimension, owner: str) -> dict[tuple[int, str], int]:
    out = contribution(assemble("c1", facts))
    return {(k.interval_ms, k.measure): v for k, v in out.items() if k[:2] == (dimension, owner)}


def test_an_answered_call_counts_its_wait_talk_hold_and_wrap_up_where_they_happened() -> None:
    q = measures(answered_call().facts, Dimension.QUEUE, "q1")
    assert q[(I0, Measure.OFFERED)] == 1
    assert (q[(I0, Measure.WAIT_MS)], q[(I1, Measure.WAIT_MS)]) == (10_000, 20_000)
    assert q[(I1, Measure.ANSWERED)] == 1
    assert q[(I1, Measure.ANSWER_WAIT_MS)] == 30_000
    assert q[(I1, answer_bucket_measure(30))] == 1  # 30 s is in the (20 s, 30 s] bucket
    in_i1 = {m: v for (i, m), v in q.items() if i == I1}
    assert (answered_within(in_i1, 30), answered_within(in_i1, 20)) == (1, 0)
    talk = 1_000_000 - 30_000 - 20_000
    ends = T0 + 1_000_000  # 10:31:30
    assert q[(I1, Measure.TALK_MS)] + q[(I2, Measure.TALK_MS)] == talk
    assert q[(I2, Measure.TALK_MS)] == ends - I2
    assert q[(I1, Measure.HOLD_MS)] == 20_000
    assert q[(I2, Measure.WRAP_UP_MS)] == 30_000
    assert q[(I2, Measure.HANDLED)] == 1
    assert q[(I2, Measure.HANDLE_MS)] == talk + 20_000 + 30_000
    a = measures(answered_call().facts, Dimension.AGENT, "a1")
    assert a[(I2, Measure.HANDLE_MS)] == q[(I2, Measure.HANDLE_MS)]
    assert (I0, Measure.OFFERED) not in a
    detail = assemble("c1", answered_call().facts)
    assert (detail.outcome, detail.wait_ms(), detail.talk_ms(), detail.hold_ms()) == (
        "answered",
        30_000,
        talk,
        20_000,
    )


def test_handling_is_not_complete_until_the_wrap_up_is() -> None:
    facts = [f for f in answered_call().facts if f.kind is not K.WRAP_UP_COMPLETED]
    q = measures(facts, Dimension.QUEUE, "q1")
    assert not [m for (_, m) in q if m in (Measure.HANDLED, Measure.HANDLE_MS, Measure.WRAP_UP_MS)]


def test_a_short_abandon_is_counted_apart_and_a_call_ending_in_queue_is_an_abandon() -> None:
    s = Script()
    s.queue("q1", K.QUEUED, T0, direction="inbound")
    s.queue("q1", K.ABANDONED, T0 + 3_000)
    s.call(K.ENDED, T0 + 3_100, detail="caller_hangup")
    q = measures(s.facts, Dimension.QUEUE, "q1")
    assert q[(I0, Measure.ABANDONED)] == 1
    assert q[(I0, Measure.ABANDONED_SHORT)] == 1
    assert assemble("c1", s.facts).outcome == "short_abandoned"
    # Without the acd's abandon (the gateway's hang-up alone), the visit is an abandon too.
    only_gateway = [f for f in s.facts if f.kind is not K.ABANDONED]
    q = measures(only_gateway, Dimension.QUEUE, "q1")
    assert q[(I0, Measure.ABANDONED)] == 1 and q[(I0, Measure.ABANDON_WAIT_MS)] == 3_100


def test_a_transfer_ends_the_agents_segment_and_the_next_queue_counts_a_new_offer() -> None:
    s = Script()
    s.queue("q1", K.QUEUED, T0, direction="inbound")
    s.call(K.CONNECTED, T0 + 5_000, agent_id="a1", queue_id="q1")
    s.call(K.TRANSFERRED, T0 + 65_000, agent_id="a1", detail="queue:q2")
    s.queue("q2", K.QUEUED, T0 + 66_000, direction="inbound")
    s.queue("q2", K.REQUEUED, T0 + 90_000, agent_id="a3", detail="ring_no_answer")
    s.call(K.CONNECTED, T0 + 96_000, agent_id="a2", queue_id="q2")
    s.call(K.ENDED, T0 + 156_000, agent_id="a2", detail="agent_hangup")
    detail = assemble("c1", s.facts)
    assert detail.transfers == 1
    assert [(v.queue_id, v.outcome, v.wait_ms) for v in detail.visits] == [
        ("q1", "answered", 5_000),
        ("q2", "answered", 30_000),
    ]
    q1 = measures(s.facts, Dimension.QUEUE, "q1")
    q2 = measures(s.facts, Dimension.QUEUE, "q2")
    assert q1[(I1, Measure.TRANSFERRED_OUT)] == 1
    assert q1[(I1, Measure.HANDLED)] == 1 and q1[(I1, Measure.HANDLE_MS)] == 60_000
    assert q2[(I1, Measure.OFFERED)] == 1 and q2[(I1, Measure.RING_NO_ANSWER)] == 1
    assert measures(s.facts, Dimension.AGENT, "a3") == {(I1, Measure.RING_NO_ANSWER): 1}
    assert measures(s.facts, Dimension.AGENT, "a2")[(I1, Measure.TALK_MS)] == 60_000


def test_an_overflow_closes_the_visit_in_the_first_queue() -> None:
    s = Script()
    s.queue("q1", K.QUEUED, T0, direction="inbound")
    s.queue("q1", K.OVERFLOWED, T0 + 60_000, detail="q2")
    s.queue("q2", K.QUEUED, T0 + 60_000, direction="inbound")
    q1 = measures(s.facts, Dimension.QUEUE, "q1")
    assert q1[(I1, Measure.OVERFLOWED)] == 1
    assert assemble("c1", s.facts).open_visit is not None


def test_a_live_answer_without_an_agent_is_a_compliance_abandon_of_its_campaign() -> None:
    s = Script()
    s.call(K.ORIGINATED, T0, direction="outbound", campaign_id="cmp1", dnis="+242066000002")
    s.call(K.DIAL_COMPLETED, T0 + 8_000, campaign_id="cmp1", detail="answered")
    s.queue("q9", K.QUEUED, T0 + 8_000, direction="outbound", campaign_id="cmp1")
    s.call(K.COMPLIANCE_ABANDONED, T0 + 10_000, campaign_id="cmp1")
    s.call(K.ENDED, T0 + 10_000, detail="compliance_abandon")
    c = measures(s.facts, Dimension.CAMPAIGN, "cmp1")
    assert c == {
        (I0, Measure.DIALS): 1,
        (I0, Measure.LIVE_ANSWERS): 1,
        (I0, Measure.COMPLIANCE_ABANDONS): 1,
    }
    assert assemble("c1", s.facts).outcome == "compliance_abandoned"


def test_delta_turns_one_contribution_into_another() -> None:
    old = contribution(assemble("c1", answered_call().facts[:5]))
    new = contribution(assemble("c1", answered_call().facts))
    applied = total([old, delta(old, new)])
    assert {k: v for k, v in applied.items() if v} == {k: v for k, v in new.items() if v}


@given(st.permutations(answered_call().facts))
def test_the_order_facts_arrive_in_changes_nothing(facts: list[CallFact]) -> None:
    expected = contribution(assemble("c1", answered_call().facts))
    assert contribution(assemble("c1", facts)) == expected


@given(st.data())
def test_incremental_contributions_add_up_to_the_final_one(data: st.DataObject) -> None:
    facts = data.draw(st.permutations(answered_call().facts))
    applied: dict[Key, int] = {}
    previous = contribution(assemble("c1", []))
    for n in range(1, len(facts) + 1):
        current = contribution(assemble("c1", facts[:n]))
        for key, value in delta(previous, current).items():
            applied[key] = applied.get(key, 0) + value
        previous = current
    final = contribution(assemble("c1", facts))
    assert {k: v for k, v in applied.items() if v} == dict(final)


@given(
    start=st.integers(0, 3 * 86_400_000),
    wait=st.integers(0, 20 * 60_000),
    talk=st.integers(1, 40 * 60_000),
    hold=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    wrap=st.integers(0, 10 * 60_000),
)
def test_split_measures_add_up_to_the_calls_own_durations(
    start: int, wait: int, talk: int, hold: tuple[float, float], wrap: int
) -> None:
    """Whatever the boundaries crossed: wait, talk, hold and wrap-up pieces add up exactly."""
    base = I0 + start
    answer, end = base + wait, base + wait + talk
    h_start = answer + int(hold[0] * talk)
    h_end = h_start + int(hold[1] * (end - h_start))
    s = Script()
    s.queue("q1", K.QUEUED, base, direction="inbound")
    s.call(K.CONNECTED, answer, agent_id="a1", queue_id="q1")
    if h_end > h_start:
        s.call(K.HELD, h_start, agent_id="a1")
        s.call(K.RESUMED, h_end, agent_id="a1")
    s.call(K.ENDED, end, agent_id="a1", detail="agent_hangup")
    s.agent("a1", K.WRAP_UP_STARTED, end)
    s.agent("a1", K.WRAP_UP_COMPLETED, end + wrap)
    out = contribution(assemble("c1", s.facts))

    def summed(dimension: Dimension, measure: str) -> int:
        return sum(v for k, v in out.items() if (k.dimension, k.measure) == (dimension, measure))

    held = h_end - h_start
    assert summed(Dimension.QUEUE, Measure.WAIT_MS) == wait
    for dimension in (Dimension.QUEUE, Dimension.AGENT):
        assert summed(dimension, Measure.TALK_MS) == talk - held
        assert summed(dimension, Measure.HOLD_MS) == held
        assert summed(dimension, Measure.WRAP_UP_MS) == wrap
        assert summed(dimension, Measure.HANDLE_MS) == talk + wrap
        assert summed(dimension, Measure.HANDLED) == 1
    assert summed(Dimension.QUEUE, Measure.ANSWER_WAIT_MS) == wait
    assert all(
        0 < v <= 900_000
        for k, v in out.items()
        if k.measure.endswith("_ms")
        and k.measure not in (Measure.ANSWER_WAIT_MS, Measure.HANDLE_MS)
    )


def test_a_transfer_to_an_agent_connected_in_the_same_millisecond_ends_only_the_first() -> None:
    s = Script()
    s.queue("q1", K.QUEUED, T0, direction="inbound")
    s.call(K.CONNECTED, T0 + 5_000, agent_id="a1", queue_id="q1")
    s.call(K.TRANSFERRED, T0 + 60_000, agent_id="a1", detail="agent:a2")
    s.call(K.CONNECTED, T0 + 60_000, agent_id="a2")
    s.call(K.ENDED, T0 + 90_000, agent_id="a2", detail="caller_hangup")
    detail = assemble("c1", s.facts)
    assert [(x.agent_id, x.ended_ms, x.transferred) for x in detail.segments] == [
        ("a1", T0 + 60_000, True),
        ("a2", T0 + 90_000, False),
    ]
    assert measures(s.facts, Dimension.AGENT, "a2")[(I1, Measure.TALK_MS)] == 30_000
