"""A scripted day of contact-centre traffic, and an oracle that computes its figures.

The script is written in the contact centre's terms (a call waited in a queue from here to
there, an agent talked, held, wrapped up, paused for lunch). Two things are derived from
it, independently of each other:

* the events the gateway and the acd would have recorded (``gateway_events``,
  ``acd_events``), to be sent through the real event stores and broker;
* the figures every interval must show (``expected_intervals``), computed straight from
  the script by overlapping each stretch of time with each 15-minute interval, with no
  use of the projector's code.

The day is 4 May 2026 in Brazzaville (UTC+1): it starts at 3 May 23:00 UTC. Calls cross
interval boundaries all day long, and some cross local midnight.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from plateau_contracts.events import agents as ag
from plateau_contracts.events import calls as cl
from plateau_contracts.events import routing as rt
from plateau_contracts.events.common import StreamedEvent

I = 15 * 60_000  # noqa: E741 (the interval length, as in the definitions)
S = 1000
MIN = 60 * S
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ZONE = ZoneInfo("Africa/Brazzaville")
SHORT_ABANDON_MS = 5 * S
THRESHOLDS_S = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)


def utc(text: str) -> int:
    """Milliseconds since the epoch of a UTC wall-clock time on 4 May 2026 (or another day)."""
    moment = datetime.fromisoformat(text if "T" in text else f"2026-05-04T{text}")
    return int((moment.replace(tzinfo=UTC) - EPOCH) / timedelta(milliseconds=1))


def when(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


@dataclass
class Visit:
    queue: str
    entered: int
    left: int
    outcome: str  # answered, abandoned, overflowed, ended


@dataclass
class Segment:
    agent: str
    queue: str | None
    start: int
    end: int
    holds: list[tuple[int, int]] = field(default_factory=list)
    wrap: tuple[int, int] | None = None
    transferred: bool = False


@dataclass
class Call:
    call_id: str
    direction: str = "inbound"
    visits: list[Visit] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    ronas: list[tuple[str, str, int]] = field(default_factory=list)  # queue, agent, at
    campaign: str | None = None
    originated: int | None = None
    dial_outcome: str | None = None
    compliance_abandon: int | None = None


@dataclass
class Day:
    calls: list[Call] = field(default_factory=list)
    #: Agent state changes as the script intends them: (agent, at, state, pause code).
    states: list[tuple[str, int, str, str | None]] = field(default_factory=list)
    gateway: list[tuple[int, StreamedEvent]] = field(default_factory=list)
    acd: list[tuple[int, StreamedEvent]] = field(default_factory=list)

    def agent(
        self, agent: str, at: int, state: str, event: StreamedEvent, code: str | None = None
    ) -> None:
        self.states.append((agent, at, state, code))
        self.acd.append((at, event))


AGENTS = ("a1", "a2", "a3", "a4")
SPECIAL = ("a7", "a8", "a9")
QUEUES = {"q-support": 20, "q-sales": 30}


def ext(agent: str) -> str:
    return "10" + agent[1:].zfill(2)


def build_day(seed: int = 20260504, arrivals: int = 360) -> Day:
    day = Day()
    for queue, threshold in QUEUES.items():
        day.acd.append(
            (
                utc("05:00:00"),
                rt.QueueConfigured(
                    queue_id=queue,
                    name=queue,
                    strategy="longest_idle",
                    ring_timeout_s=15,
                    service_level_threshold_s=threshold,
                    service_level_target=0.8,
                ),
            )
        )
    login = utc("06:00:00")
    for agent in (*AGENTS, *SPECIAL):
        day.agent(
            agent, login, "unavailable", ag.AgentLoggedIn(agent_id=agent, extension=ext(agent))
        )
        day.agent(agent, login + MIN, "available", ag.AgentBecameAvailable(agent_id=agent))
    _random_traffic(day, random.Random(seed), arrivals, login + MIN)
    _special_calls(day)
    return day


def _answered(
    day: Day,
    call: Call,
    queue: str,
    entered: int,
    agent: str,
    answer: int,
    end: int,
    *,
    holds: tuple[tuple[int, int], ...] = (),
    wrap_ms: int,
    reserved_at: int | None = None,
    ended_by: str = "caller",
) -> None:
    """A visit answered by ``agent`` and the agent's whole handling of it."""
    cid = call.call_id
    direction = call.direction
    call.visits.append(Visit(queue, entered, answer, "answered"))
    reserved = reserved_at if reserved_at is not None else answer - 2 * S
    day.acd.append(
        (
            reserved,
            rt.CallAgentReserved(
                queue_id=queue,
                call_id=cid,
                agent_id=agent,
                extension=ext(agent),
                waited_ms=reserved - entered,
                strategy="longest_idle",
                candidates=(),
                decision="longest idle",
            ),
        )
    )
    day.agent(
        agent, reserved, "reserved", ag.AgentReserved(agent_id=agent, call_id=cid, queue_id=queue)
    )
    day.gateway.append(
        (
            answer,
            cl.CallConnected(call_id=cid, agent_id=agent, extension=ext(agent), queue_id=queue),
        )
    )
    day.agent(
        agent,
        answer,
        "on_call",
        ag.AgentBecameBusy(agent_id=agent, call_id=cid, queue_id=queue, direction=direction),
    )
    for h_start, h_end in holds:
        day.gateway.append((h_start, cl.CallHeld(call_id=cid, agent_id=agent, via="api")))
        day.gateway.append((h_end, cl.CallResumed(call_id=cid, agent_id=agent, via="api")))
    cause, by = (
        (cl.EndCause.CALLER_HANGUP, cl.EndedBy.CALLER)
        if ended_by == "caller"
        else (cl.EndCause.AGENT_HANGUP, cl.EndedBy.AGENT)
    )
    day.gateway.append((end, cl.CallEnded(call_id=cid, cause=cause, ended_by=by, agent_id=agent)))
    _wrap(day, call, agent, queue, end, wrap_ms)
    call.segments.append(Segment(agent, queue, answer, end, list(holds), (end, end + wrap_ms)))


def _wrap(day: Day, call: Call, agent: str, queue: str | None, start: int, wrap_ms: int) -> None:
    cid = call.call_id
    day.agent(
        agent, start, "wrap_up", ag.WrapUpStarted(agent_id=agent, call_id=cid, queue_id=queue)
    )
    done = start + wrap_ms
    day.agent(
        agent,
        done,
        "unavailable",
        ag.WrapUpCompleted(
            agent_id=agent, call_id=cid, disposition="resolved", completed_by="agent"
        ),
    )
    day.agent(agent, done, "available", ag.AgentBecameAvailable(agent_id=agent))


def _offer(day: Day, cid: str, queue: str, at: int) -> Call:
    call = Call(cid)
    day.calls.append(call)
    day.gateway.append(
        (
            at - 500,
            cl.CallOffered(
                call_id=cid,
                ani="+242066000001",
                dnis="+242053000100",
                trunk="mno",
                sip_call_id=f"sip-{cid}",
            ),
        )
    )
    day.acd.append(
        (at, rt.CallQueued(queue_id=queue, call_id=cid, direction="inbound", priority=0))
    )
    return call


def _random_traffic(day: Day, rng: random.Random, arrivals: int, ready: int) -> None:
    free_at = dict.fromkeys(AGENTS, ready)
    pauses = [
        ("a1", utc("11:00:00"), 45 * MIN, "lunch"),
        ("a2", utc("12:10:00"), 30 * MIN, "lunch"),
        ("a3", utc("15:20:00"), 10 * MIN, "break"),
    ]
    start, span = utc("06:30:00"), utc("22:56:00") - utc("06:30:00")
    times = sorted(start + rng.randrange(span // S) * S + rng.randrange(S) for _ in range(arrivals))
    for n, arrived in enumerate(times):
        for pause in list(pauses):
            agent, planned, length, code = pause
            if planned <= arrived:
                begin = max(planned, free_at[agent])
                day.agent(
                    agent,
                    begin,
                    "paused",
                    ag.AgentPaused(agent_id=agent, code=code, paused_by="agent"),
                    code,
                )
                day.agent(
                    agent, begin + length, "available", ag.AgentBecameAvailable(agent_id=agent)
                )
                free_at[agent] = begin + length
                pauses.remove(pause)
        queue = rng.choice(list(QUEUES))
        call = _offer(day, f"r{n:04d}", queue, arrived)
        patience = rng.choice([2 * S, 4 * S + 999, 12 * S, 40 * S, 3 * MIN, 30 * MIN, 30 * MIN])
        agent = min(AGENTS, key=lambda a: (free_at[a], a))
        answer = max(arrived + 3 * S, free_at[agent] + 2 * S)
        if answer - arrived > patience:
            gone = arrived + patience
            call.visits.append(Visit(queue, arrived, gone, "abandoned"))
            day.acd.append(
                (gone, rt.CallAbandoned(queue_id=queue, call_id=call.call_id, waited_ms=patience))
            )
            day.gateway.append(
                (
                    gone,
                    cl.CallEnded(
                        call_id=call.call_id,
                        cause=cl.EndCause.CALLER_HANGUP,
                        ended_by=cl.EndedBy.CALLER,
                    ),
                )
            )
            continue
        talk = rng.randrange(20 * S, 14 * MIN)
        end = answer + talk
        holds: tuple[tuple[int, int], ...] = ()
        if rng.random() < 0.3:
            h_start = answer + rng.randrange(5 * S, talk // 2)
            holds = ((h_start, h_start + rng.randrange(S, talk // 3)),)
        wrap_ms = rng.randrange(3 * S, 2 * MIN)
        _answered(
            day,
            call,
            queue,
            arrived,
            agent,
            answer,
            end,
            holds=holds,
            wrap_ms=wrap_ms,
            ended_by=rng.choice(["caller", "agent"]),
        )
        free_at[agent] = end + wrap_ms
    for agent in AGENTS:
        out = max(utc("23:30:00"), free_at[agent] + MIN)
        day.agent(agent, out, "logged_out", ag.AgentLoggedOut(agent_id=agent, reason="requested"))


def _special_calls(day: Day) -> None:
    # a7 takes lunch; a9 takes a break.
    day.agent(
        "a7",
        utc("11:50:00"),
        "paused",
        ag.AgentPaused(agent_id="a7", code="lunch", paused_by="agent"),
        "lunch",
    )
    day.agent("a7", utc("12:40:00"), "available", ag.AgentBecameAvailable(agent_id="a7"))
    day.agent(
        "a9",
        utc("08:07:30"),
        "paused",
        ag.AgentPaused(agent_id="a9", code="break", paused_by="supervisor"),
        "break",
    )
    day.agent("a9", utc("08:22:30"), "available", ag.AgentBecameAvailable(agent_id="a9"))

    # Outbound: a live answer with no agent within 2 s (compliance abandon), a live answer
    # taken by a9, and a dial nobody answered.
    for cid, at, outcome in (
        ("o1", utc("10:00:00"), "compliance"),
        ("o2", utc("10:05:00"), "answered"),
        ("o3", utc("10:10:00"), "no_answer"),
    ):
        call = Call(cid, direction="outbound", campaign="cmp-may", originated=at)
        day.calls.append(call)
        day.gateway.append(
            (
                at,
                cl.CallOriginated(
                    call_id=cid,
                    campaign_id="cmp-may",
                    contact_id=f"ct-{cid}",
                    attempt_id=f"at-{cid}",
                    number="+242066000009",
                    list_version=1,
                    trunk="mno",
                    requested_by=cl.DialRequester.DIALER,
                    sip_call_id=f"sip-{cid}",
                ),
            )
        )
        if outcome == "no_answer":
            call.dial_outcome = "no_answer"
            day.gateway.append(
                (
                    at + 25 * S,
                    cl.DialCompleted(
                        call_id=cid,
                        outcome=cl.DialOutcome.NO_ANSWER,
                        campaign_id="cmp-may",
                        attempt_id=f"at-{cid}",
                    ),
                )
            )
            day.gateway.append(
                (
                    at + 25 * S,
                    cl.CallEnded(
                        call_id=cid, cause=cl.EndCause.NO_ANSWER, ended_by=cl.EndedBy.GATEWAY
                    ),
                )
            )
            continue
        call.dial_outcome = "answered"
        live = at + 12 * S
        day.gateway.append(
            (
                live,
                cl.DialCompleted(
                    call_id=cid,
                    outcome=cl.DialOutcome.ANSWERED,
                    campaign_id="cmp-may",
                    attempt_id=f"at-{cid}",
                ),
            )
        )
        day.acd.append(
            (
                live,
                rt.CallQueued(
                    queue_id="q-sales",
                    call_id=cid,
                    direction="outbound",
                    priority=100,
                    campaign_id="cmp-may",
                ),
            )
        )
        if outcome == "compliance":
            dropped = live + 2 * S
            call.compliance_abandon = dropped
            call.visits.append(Visit("q-sales", live, dropped, "ended"))
            day.gateway.append(
                (
                    dropped,
                    cl.ComplianceAbandoned(
                        call_id=cid,
                        campaign_id="cmp-may",
                        attempt_id=f"at-{cid}",
                        waited_ms=2000,
                        message_played=False,
                    ),
                )
            )
            day.gateway.append(
                (
                    dropped,
                    cl.CallEnded(
                        call_id=cid,
                        cause=cl.EndCause.COMPLIANCE_ABANDON,
                        ended_by=cl.EndedBy.GATEWAY,
                    ),
                )
            )
        else:
            _answered(
                day,
                call,
                "q-sales",
                live,
                "a9",
                live + S,
                utc("10:09:00"),
                wrap_ms=40 * S,
                reserved_at=live,
                ended_by="agent",
            )

    # A transfer across an interval boundary, then a ring-no-answer in the target queue.
    call = _offer(day, "t1", "q-support", utc("14:07:10"))
    queue, cid = "q-support", "t1"
    day.acd.append(
        (
            utc("14:07:38"),
            rt.CallAgentReserved(
                queue_id=queue,
                call_id=cid,
                agent_id="a8",
                extension=ext("a8"),
                waited_ms=28_000,
                strategy="longest_idle",
                candidates=(),
                decision="only one",
            ),
        )
    )
    day.agent(
        "a8",
        utc("14:07:38"),
        "reserved",
        ag.AgentReserved(agent_id="a8", call_id=cid, queue_id=queue),
    )
    day.gateway.append(
        (
            utc("14:07:40"),
            cl.CallConnected(call_id=cid, agent_id="a8", extension=ext("a8"), queue_id=queue),
        )
    )
    day.agent(
        "a8",
        utc("14:07:40"),
        "on_call",
        ag.AgentBecameBusy(agent_id="a8", call_id=cid, queue_id=queue, direction="inbound"),
    )
    call.visits.append(Visit(queue, utc("14:07:10"), utc("14:07:40"), "answered"))
    hold = (utc("14:10:00"), utc("14:16:30"))
    day.gateway.append((hold[0], cl.CallHeld(call_id=cid, agent_id="a8", via="softphone")))
    day.gateway.append((hold[1], cl.CallResumed(call_id=cid, agent_id="a8", via="softphone")))
    moved = utc("14:20:05")
    day.gateway.append(
        (
            moved,
            cl.CallTransferred(
                call_id=cid,
                agent_id="a8",
                target=cl.TransferTarget(kind="queue", queue_id="q-sales"),
                via="api",
            ),
        )
    )
    _wrap(day, call, "a8", queue, moved, 20 * S)
    call.segments.append(
        Segment(
            "a8", queue, utc("14:07:40"), moved, [hold], (moved, moved + 20 * S), transferred=True
        )
    )
    requeued = utc("14:20:06")
    day.acd.append(
        (requeued, rt.CallQueued(queue_id="q-sales", call_id=cid, direction="inbound", priority=0))
    )
    day.acd.append(
        (
            utc("14:20:30"),
            rt.CallAgentReserved(
                queue_id="q-sales",
                call_id=cid,
                agent_id="a9",
                extension=ext("a9"),
                waited_ms=24_000,
                strategy="longest_idle",
                candidates=(),
                decision="only one",
            ),
        )
    )
    day.agent(
        "a9",
        utc("14:20:30"),
        "reserved",
        ag.AgentReserved(agent_id="a9", call_id=cid, queue_id="q-sales"),
    )
    day.acd.append(
        (
            utc("14:20:45"),
            rt.CallRequeued(
                queue_id="q-sales",
                call_id=cid,
                agent_id="a9",
                reason=rt.RequeueReason.RING_NO_ANSWER,
            ),
        )
    )
    call.ronas.append(("q-sales", "a9", utc("14:20:45")))
    day.agent(
        "a9",
        utc("14:20:45"),
        "paused",
        ag.AgentNotResponding(agent_id="a9", call_id=cid, queue_id="q-sales", ring_timeout_s=15),
        "not_responding",
    )
    day.agent("a9", utc("14:30:00"), "available", ag.AgentBecameAvailable(agent_id="a9"))
    _answered(
        day,
        call,
        "q-sales",
        requeued,
        "a7",
        utc("14:21:00"),
        utc("14:40:00"),
        wrap_ms=30 * S,
        reserved_at=utc("14:20:50"),
    )
    call.visits = [call.visits[0], call.visits[-1]]

    # An overflow after two minutes, then an abandon in the overflow queue.
    call = _offer(day, "v1", "q-support", utc("16:00:00"))
    call.visits.append(Visit("q-support", utc("16:00:00"), utc("16:02:00"), "overflowed"))
    day.acd.append(
        (
            utc("16:02:00"),
            rt.CallOverflowed(
                queue_id="q-support",
                call_id="v1",
                to_queue_id="q-sales",
                reason=rt.OverflowReason.MAX_WAIT_EXCEEDED,
                waited_ms=120_000,
            ),
        )
    )
    day.acd.append(
        (
            utc("16:02:00"),
            rt.CallQueued(
                queue_id="q-sales",
                call_id="v1",
                direction="inbound",
                priority=0,
                overflowed_from="q-support",
            ),
        )
    )
    call.visits.append(Visit("q-sales", utc("16:02:00"), utc("16:03:30"), "abandoned"))
    day.acd.append(
        (utc("16:03:30"), rt.CallAbandoned(queue_id="q-sales", call_id="v1", waited_ms=90_000))
    )
    day.gateway.append(
        (
            utc("16:03:30"),
            cl.CallEnded(call_id="v1", cause=cl.EndCause.CALLER_HANGUP, ended_by=cl.EndedBy.CALLER),
        )
    )

    # Across local midnight (23:58 to 00:07 in Brazzaville), with a hold across it.
    call = _offer(day, "m1", "q-support", utc("22:58:00"))
    _answered(
        day,
        call,
        "q-support",
        utc("22:58:00"),
        "a8",
        utc("22:59:30"),
        utc("23:07:00"),
        holds=((utc("22:59:50"), utc("23:00:20")),),
        wrap_ms=75 * S,
    )
    for agent in SPECIAL:
        day.agent(
            agent,
            utc("23:45:00"),
            "logged_out",
            ag.AgentLoggedOut(agent_id=agent, reason="requested"),
        )


# -- the oracle -------------------------------------------------------------------------

Expected = dict[tuple[str, str, int, str], int]


def _overlaps(out: Expected, owner: tuple[str, str], start: int, end: int, measure: str) -> None:
    """Credit every interval with the part of ``[start, end)`` that falls inside it."""
    interval = start - start % I
    while interval < end:
        inside = min(end, interval + I) - max(start, interval)
        if inside > 0:
            out[(owner[0], owner[1], interval, measure)] += inside
        interval += I


def _count(out: Expected, owner: tuple[str, str], at: int, measure: str, value: int = 1) -> None:
    out[(owner[0], owner[1], at // I * I, measure)] += value


def expected_intervals(day: Day) -> Expected:
    """Every non-zero interval measure the script implies (see docs/metrics.md)."""
    out: Expected = defaultdict(int)
    for call in day.calls:
        for v in call.visits:
            q = ("queue", v.queue)
            wait = v.left - v.entered
            _count(out, q, v.entered, "offered")
            _overlaps(out, q, v.entered, v.left, "wait_ms")
            if v.outcome == "answered":
                _count(out, q, v.left, "answered")
                _count(out, q, v.left, "answer_wait_ms", wait)
                bound = next((t for t in THRESHOLDS_S if wait <= t * S), None)
                if bound is not None:
                    _count(out, q, v.left, f"answered_wait_le_{bound}s")
            elif v.outcome == "abandoned":
                _count(out, q, v.left, "abandoned")
                _count(out, q, v.left, "abandon_wait_ms", wait)
                if wait < SHORT_ABANDON_MS:
                    _count(out, q, v.left, "abandoned_short")
            elif v.outcome == "overflowed":
                _count(out, q, v.left, "overflowed")
        for s in call.segments:
            owners = [("agent", s.agent)] + ([("queue", s.queue)] if s.queue else [])
            for o in owners:
                cursor = s.start
                for a, b in s.holds:
                    _overlaps(out, o, cursor, a, "talk_ms")
                    _overlaps(out, o, a, b, "hold_ms")
                    _count(out, o, a, "holds")
                    cursor = b
                _overlaps(out, o, cursor, s.end, "talk_ms")
                assert s.wrap is not None
                _overlaps(out, o, s.wrap[0], s.wrap[1], "wrap_up_ms")
                _count(out, o, s.wrap[1], "handled")
                _count(
                    out,
                    o,
                    s.wrap[1],
                    "handle_ms",
                    (s.end - s.start) + (s.wrap[1] - s.wrap[0]),  # talk + hold + wrap-up
                )
                if s.transferred:
                    _count(out, o, s.end, "transferred_out")
        for queue, agent, at in call.ronas:
            _count(out, ("queue", queue), at, "ring_no_answer")
            _count(out, ("agent", agent), at, "ring_no_answer")
        if call.campaign and call.originated is not None:
            c, at = ("campaign", call.campaign), call.originated
            _count(out, c, at, "dials")
            _count(
                out,
                c,
                at,
                {"answered": "live_answers", "no_answer": "no_answers"}[call.dial_outcome or ""],
            )
            if call.segments:
                _count(out, c, at, "connects")
            if call.compliance_abandon is not None:
                _count(out, c, at, "compliance_abandons")
    by_agent: dict[str, list[tuple[int, int, str, str | None]]] = defaultdict(list)
    for n, (agent, at, state, code) in enumerate(day.states):
        by_agent[agent].append((at, n, state, code))
    for agent, changes in by_agent.items():
        changes.sort()
        for (at, _, state, code), (nxt, _, _, _) in itertools.pairwise(changes):
            if state == "logged_out":
                continue
            _overlaps(out, ("agent", agent), at, nxt, f"state_{state}_ms")
            if code is not None:
                _overlaps(out, ("agent", agent), at, nxt, f"state_paused_ms:{code}")
    return {k: v for k, v in out.items() if v}


def local_period(interval: int, grain: str) -> datetime:
    """The UTC start of the local hour, day or month holding an interval (Brazzaville has no
    daylight saving time, so the local start is a fixed offset away)."""
    local = when(interval).astimezone(ZONE)
    floor = {
        "hour": local.replace(minute=0, second=0, microsecond=0),
        "day": local.replace(hour=0, minute=0, second=0, microsecond=0),
        "month": local.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }[grain]
    return floor.astimezone(UTC)


def expected_rollups(intervals: Expected) -> dict[tuple[str, str, str, datetime, str], int]:
    out: dict[tuple[str, str, str, datetime, str], int] = defaultdict(int)
    for (dimension, owner, interval, measure), value in intervals.items():
        for grain in ("hour", "day", "month"):
            out[(grain, dimension, owner, local_period(interval, grain), measure)] += value
    return {k: v for k, v in out.items() if v}


# -- ids unique to one test run ---------------------------------------------------------

_ID_FIELDS = (
    "call_id",
    "agent_id",
    "queue_id",
    "to_queue_id",
    "overflowed_from",
    "campaign_id",
    "contact_id",
    "attempt_id",
)


def tagged(event: StreamedEvent, tag: str) -> StreamedEvent:
    """The event with every id suffixed by ``tag``.

    Consumers keep one checkpoint per stream id, and the broker is shared by the whole
    test session: unique ids keep this day's streams apart from every other test's.
    """
    data = event.model_dump(mode="json")
    for key in _ID_FIELDS:
        if data.get(key) is not None:
            data[key] = f"{data[key]}{tag}"
    target = data.get("target")
    if isinstance(target, dict) and target.get("queue_id"):
        target["queue_id"] = f"{target['queue_id']}{tag}"
    return type(event).model_validate(data)
