"""A call's detail record and its contribution to the measures, from the call's facts.

The facts of one call come from several streams (the gateway's call stream, the acd's
queue streams, the agent streams), which the bus does not order with one another. They are
sorted by time, then by the order of the call flow (``KIND_RANK``), then by stream; the
record is a pure function of the *set* of facts, so arrival order never matters.

A call is a sequence of **queue visits** (entered with ``call.queued``, left by an answer,
an abandon, an overflow, a routing failure or the end of the call) and **agent segments**
(from ``call.connected`` to a blind transfer or the end of the call, with their holds and
the agent's wrap-up of that call). Only finished parts contribute to the measures: a
visit still waiting or a segment still talking counts in the live view, not yet in the
intervals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from plateau_stats_projector.domain.contributions import (
    Contribution,
    add_count,
    add_duration,
)
from plateau_stats_projector.domain.facts import CallFact, CallFactKind
from plateau_stats_projector.domain.metrics import (
    SHORT_ABANDON_MS,
    Dimension,
    Measure,
    answer_bucket_of,
)

_K = CallFactKind


@dataclass
class QueueVisit:
    """A stay of the call in one queue."""

    queue_id: str
    entered_ms: int
    left_ms: int | None = None
    #: answered, abandoned, overflowed, routing_failed or ended (the call ended while queued
    #: without the acd recording an abandon).
    outcome: str | None = None
    agent_id: str | None = None

    @property
    def wait_ms(self) -> int | None:
        return None if self.left_ms is None else self.left_ms - self.entered_ms


@dataclass
class AgentSegment:
    """An agent's part of the call: connected until transferred away or ended."""

    agent_id: str
    queue_id: str | None
    connected_ms: int
    ended_ms: int | None = None
    holds: list[tuple[int, int | None]] = field(default_factory=list)
    wrap_started_ms: int | None = None
    wrap_ended_ms: int | None = None
    transferred: bool = False

    def hold_ms(self) -> int:
        end = self.ended_ms
        return sum(
            (h_end if h_end is not None else end or h_start) - h_start
            for h_start, h_end in self.holds
        )

    def talk_pieces(self) -> list[tuple[int, int]]:
        """The connected stretches off hold, as ``[start, end)`` pairs."""
        assert self.ended_ms is not None
        pieces: list[tuple[int, int]] = []
        cursor = self.connected_ms
        for h_start, h_end in self.holds:
            pieces.append((cursor, h_start))
            cursor = h_end if h_end is not None else self.ended_ms
        pieces.append((cursor, self.ended_ms))
        return [(a, b) for a, b in pieces if b > a]

    @property
    def handle_completed_ms(self) -> int | None:
        """When this agent's handling ended: wrap-up done, or the segment's end without one."""
        if self.ended_ms is None:
            return None
        if self.wrap_started_ms is not None:
            return self.wrap_ended_ms
        return self.ended_ms

    @property
    def wrap_ms(self) -> int:
        if self.wrap_started_ms is None or self.wrap_ended_ms is None:
            return 0
        return self.wrap_ended_ms - self.wrap_started_ms


@dataclass
class CallDetail:
    """The call detail record of one call, assembled from its facts."""

    call_id: str
    direction: str | None = None
    started_ms: int | None = None
    ended_ms: int | None = None
    end_cause: str | None = None
    ani: str | None = None
    dnis: str | None = None
    campaign_id: str | None = None
    dial_outcome: str | None = None
    compliance_abandoned_ms: int | None = None
    visits: list[QueueVisit] = field(default_factory=list)
    segments: list[AgentSegment] = field(default_factory=list)
    #: ``(queue, agent, at)`` of each reservation the agent let ring out.
    ring_no_answers: list[tuple[str | None, str, int]] = field(default_factory=list)

    @property
    def open_visit(self) -> QueueVisit | None:
        """The queue the call is waiting in now, if any."""
        if self.visits and self.visits[-1].left_ms is None and self.ended_ms is None:
            return self.visits[-1]
        return None

    @property
    def outcome(self) -> str:  # noqa: PLR0911 (one word per way a call goes)
        """One word for the CDR: how the call went, as far as is known."""
        if self.compliance_abandoned_ms is not None:
            return "compliance_abandoned"
        if self.segments:
            return "answered"
        if self.visits and self.visits[-1].outcome is not None:
            last = self.visits[-1]
            if last.outcome == "abandoned" and (last.wait_ms or 0) < SHORT_ABANDON_MS:
                return "short_abandoned"
            return last.outcome or "ended"
        if self.dial_outcome is not None and self.dial_outcome != "answered":
            return self.dial_outcome
        if self.ended_ms is None:
            return "in_progress"
        return self.end_cause or "ended"

    @property
    def transfers(self) -> int:
        return sum(1 for s in self.segments if s.transferred)

    def wait_ms(self) -> int:
        return sum(v.wait_ms or 0 for v in self.visits)

    def talk_ms(self) -> int:
        return sum(
            b - a for s in self.segments if s.ended_ms is not None for a, b in s.talk_pieces()
        )

    def hold_ms(self) -> int:
        return sum(s.hold_ms() for s in self.segments if s.ended_ms is not None)

    def wrap_ms(self) -> int:
        return sum(s.wrap_ms for s in self.segments)


def assemble(call_id: str, facts: Iterable[CallFact]) -> CallDetail:
    """The detail record of a call from its facts, in any order."""
    detail = CallDetail(call_id)
    for fact in sorted(facts, key=CallFact.sort_key):
        _apply(detail, fact)
    return detail


def _open_segment(detail: CallDetail, agent_id: str | None = None) -> AgentSegment | None:
    for segment in reversed(detail.segments):
        if segment.ended_ms is None and (agent_id is None or segment.agent_id == agent_id):
            return segment
    return None


def _close_visit(
    detail: CallDetail, at: int, outcome: str, queue_id: str | None, agent_id: str | None = None
) -> None:
    visit = detail.open_visit
    if visit is None or (queue_id is not None and visit.queue_id != queue_id):
        return
    visit.left_ms, visit.outcome, visit.agent_id = at, outcome, agent_id


def _close_segments(
    detail: CallDetail, at: int, transferred: bool = False, agent_id: str | None = None
) -> None:
    """End the open segments (only ``agent_id``'s, when a transfer names who made it)."""
    for segment in detail.segments:
        if segment.ended_ms is None and agent_id in (None, segment.agent_id):
            segment.ended_ms = at
            segment.transferred = transferred
            segment.holds = [(s, e if e is not None else at) for s, e in segment.holds]


def _apply(detail: CallDetail, fact: CallFact) -> None:  # noqa: PLR0912, PLR0915 (one case per kind)
    at = fact.at_ms
    if detail.started_ms is None or at < detail.started_ms:
        detail.started_ms = at
    detail.campaign_id = detail.campaign_id or fact.campaign_id
    match fact.kind:
        case _K.OFFERED | _K.ORIGINATED:
            detail.direction = fact.direction
            detail.ani, detail.dnis = fact.ani or detail.ani, fact.dnis or detail.dnis
        case _K.DIAL_COMPLETED:
            detail.dial_outcome = fact.detail
        case _K.QUEUED:
            if detail.ended_ms is None and fact.queue_id is not None:
                # A call queued while still waiting elsewhere moved without an overflow fact.
                _close_visit(detail, at, "overflowed", None)
                detail.visits.append(QueueVisit(fact.queue_id, at))
            detail.direction = detail.direction or fact.direction
        case _K.RING_NO_ANSWER:
            pass  # counted from the acd's requeue, which names the queue
        case _K.REQUEUED:
            if fact.detail == "ring_no_answer" and fact.agent_id is not None:
                detail.ring_no_answers.append((fact.queue_id, fact.agent_id, at))
        case _K.CONNECTED:
            if fact.agent_id is None or _open_segment(detail, fact.agent_id) is not None:
                return
            visit = detail.open_visit
            queue_id = fact.queue_id or (visit.queue_id if visit else None)
            _close_visit(detail, at, "answered", None, fact.agent_id)
            detail.segments.append(AgentSegment(fact.agent_id, queue_id, at))
        case _K.HELD:
            segment = _open_segment(detail, fact.agent_id)
            if segment is not None and not (segment.holds and segment.holds[-1][1] is None):
                segment.holds.append((at, None))
        case _K.RESUMED:
            segment = _open_segment(detail, fact.agent_id)
            if segment is not None and segment.holds and segment.holds[-1][1] is None:
                segment.holds[-1] = (segment.holds[-1][0], at)
        case _K.TRANSFERRED:
            # Only the transferring agent's segment: the agent it went to may already be
            # connected at the same millisecond.
            _close_segments(detail, at, transferred=True, agent_id=fact.agent_id)
        case _K.ABANDONED:
            _close_visit(detail, at, "abandoned", fact.queue_id, fact.agent_id)
        case _K.OVERFLOWED:
            _close_visit(detail, at, "overflowed", fact.queue_id)
        case _K.ROUTING_FAILED:
            _close_visit(detail, at, "routing_failed", fact.queue_id)
        case _K.COMPLIANCE_ABANDONED:
            detail.compliance_abandoned_ms = at
        case _K.ENDED:
            if detail.ended_ms is None:
                caller_left = fact.detail == "caller_hangup"
                _close_visit(detail, at, "abandoned" if caller_left else "ended", None)
                _close_segments(detail, at)
                detail.ended_ms, detail.end_cause = at, fact.detail
        case _K.WRAP_UP_STARTED | _K.WRAP_UP_COMPLETED:
            _wrap_up(detail, fact)


def _wrap_up(detail: CallDetail, fact: CallFact) -> None:
    # The acd's agent stream and the gateway's call stream are not ordered with one
    # another: a wrap-up may sort before the segment's end. It belongs to the agent's
    # last segment of this call all the same.
    for segment in reversed(detail.segments):
        if segment.agent_id == fact.agent_id:
            if fact.kind is _K.WRAP_UP_STARTED:
                segment.wrap_started_ms = fact.at_ms
            else:
                segment.wrap_ended_ms = fact.at_ms
            return


def contribution(detail: CallDetail) -> Contribution:
    """What this call adds to the queue, agent and campaign measures, interval by interval."""
    out: Contribution = Counter()
    for visit in detail.visits:
        queue = (Dimension.QUEUE, visit.queue_id)
        add_count(out, queue, visit.entered_ms, Measure.OFFERED)
        if visit.left_ms is None or visit.wait_ms is None:
            continue
        wait = visit.wait_ms
        add_duration(out, queue, visit.entered_ms, visit.left_ms, Measure.WAIT_MS)
        at = visit.left_ms
        if visit.outcome == "answered":
            add_count(out, queue, at, Measure.ANSWERED)
            add_count(out, queue, at, Measure.ANSWER_WAIT_MS, wait)
            bucket = answer_bucket_of(wait)
            if bucket is not None:
                add_count(out, queue, at, bucket)
        elif visit.outcome == "abandoned":
            add_count(out, queue, at, Measure.ABANDONED)
            add_count(out, queue, at, Measure.ABANDON_WAIT_MS, wait)
            if wait < SHORT_ABANDON_MS:
                add_count(out, queue, at, Measure.ABANDONED_SHORT)
        elif visit.outcome == "overflowed":
            add_count(out, queue, at, Measure.OVERFLOWED)
        elif visit.outcome == "routing_failed":
            add_count(out, queue, at, Measure.ROUTING_FAILED)
    for segment in detail.segments:
        _segment_contribution(out, segment)
    for queue_id, agent_id, at in detail.ring_no_answers:
        add_count(out, (Dimension.AGENT, agent_id), at, Measure.RING_NO_ANSWER)
        if queue_id is not None:
            add_count(out, (Dimension.QUEUE, queue_id), at, Measure.RING_NO_ANSWER)
    _campaign_contribution(out, detail)
    return out


def _segment_contribution(out: Contribution, segment: AgentSegment) -> None:
    owners = [(Dimension.AGENT, segment.agent_id)]
    if segment.queue_id is not None:
        owners.append((Dimension.QUEUE, segment.queue_id))
    ended = segment.ended_ms
    for owner in owners:
        for h_start, _ in segment.holds:
            add_count(out, owner, h_start, Measure.HOLDS)
        if ended is None:
            continue
        for start, end in segment.talk_pieces():
            add_duration(out, owner, start, end, Measure.TALK_MS)
        for h_start, h_end in segment.holds:
            add_duration(out, owner, h_start, h_end or ended, Measure.HOLD_MS)
        if segment.transferred:
            add_count(out, owner, ended, Measure.TRANSFERRED_OUT)
        if segment.wrap_started_ms is not None and segment.wrap_ended_ms is not None:
            add_duration(
                out, owner, segment.wrap_started_ms, segment.wrap_ended_ms, Measure.WRAP_UP_MS
            )
        completed = segment.handle_completed_ms
        if completed is not None:
            talk = sum(b - a for a, b in segment.talk_pieces())
            add_count(out, owner, completed, Measure.HANDLED)
            add_count(
                out, owner, completed, Measure.HANDLE_MS, talk + segment.hold_ms() + segment.wrap_ms
            )


def _campaign_contribution(out: Contribution, detail: CallDetail) -> None:
    # Every campaign count is attributed to the interval the dial was placed in, so a
    # dial's whole fate (answer, connect, compliance abandon) lands in one place.
    if detail.campaign_id is None or detail.direction != "outbound" or detail.started_ms is None:
        return
    campaign, at = (Dimension.CAMPAIGN, detail.campaign_id), detail.started_ms
    add_count(out, campaign, at, Measure.DIALS)
    outcome_measure = {
        "answered": Measure.LIVE_ANSWERS,
        "no_answer": Measure.NO_ANSWERS,
        "busy": Measure.BUSIES,
        "machine": Measure.MACHINES,
        "failed": Measure.DIAL_FAILURES,
    }
    if detail.dial_outcome in outcome_measure:
        add_count(out, campaign, at, outcome_measure[detail.dial_outcome])
    if detail.segments:
        add_count(out, campaign, at, Measure.CONNECTS)
    if detail.compliance_abandoned_ms is not None:
        add_count(out, campaign, at, Measure.COMPLIANCE_ABANDONS)
