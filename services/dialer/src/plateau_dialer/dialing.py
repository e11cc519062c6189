"""The dialer's pacing loop and what it learns from the gateway and the acd.

Every tick, for each running campaign whose calling window is open, the loop reads the
floor (the campaign queue's agents, from the acd's events), asks the pacing how many dials
to place now, and takes that many due contacts. Each dial is first checked
(``dial.compliance_checked``, recorded whatever it decides). An allowed dial is then
recorded as in flight, and only after that commit is it sent: ``Originate``, with the
attempt id as the request id.

Crash safety:

* A dial is never placed twice. After a restart, attempts that were recorded but never
  confirmed as sent are sent again with the same request id, and the gateway answers a
  repeated request id with its first answer.
* A contact is never forgotten. Its plan is a row written in the same transaction as the
  events.

Outcomes come from the gateway's facts on ``plateau.calls``, matched by attempt id or
call id:

* ``call.dial_completed`` when the dial was not answered;
* ``call.connected`` for a live answer given to an agent;
* ``call.compliance_abandoned`` for one that found no agent within 2 s.

Each outcome is fed to the pacing's estimator and plans the contact's next attempt.

The estimator's state (``pacing_measurements``, one row per campaign) is read, updated and
written back in the transaction of the facts it learns from (a dial recorded in flight, an
outcome), under the row's lock: a restarted dialer paces from what it had learned, and a
fact redelivered after a rollback is never learned twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import structlog
import uuid6

from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import agents as agent_events
from plateau_contracts.events import calls as call_events
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.dialer import CampaignCreated, DialAttempted, PacingMode
from plateau_contracts.events.routing import QueueConfigured
from plateau_contracts.topics import Topic
from plateau_dialer.adapters.gateway import CallControl, Dialled
from plateau_dialer.domain.dial_plan import (
    ContactPlan,
    DialContext,
    DialResult,
    RetryRules,
    after_outcome,
    check_dial,
    dialled,
    next_opening,
)
from plateau_dialer.domain.pacing import (
    AbandonFormula,
    DialMode,
    FloorState,
    PacingPolicy,
    decide_dials,
)
from plateau_dialer.domain.pacing_measurements import (
    ComplianceAbandon,
    DialOutcome,
    DialPlaced,
    DialResolved,
    LiveAnswerConnected,
    Observation,
    PacingEstimator,
    SnapshotError,
    from_snapshot,
    snapshot,
)
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend

log = structlog.get_logger(__name__)

_MODES = {
    PacingMode.PREDICTIVE: DialMode.PREDICTIVE,
    PacingMode.PROGRESSIVE: DialMode.PROGRESSIVE,
    PacingMode.PREVIEW: DialMode.PREVIEW,
}


def _policy(campaign: CampaignCreated) -> PacingPolicy:
    """The pacing settings of a campaign (one place, so pacing and reporting agree)."""
    return PacingPolicy(mode=_MODES[campaign.pacing], abandon_target=campaign.max_abandon_rate)


_RESULTS = {
    call_events.DialOutcome.BUSY: DialResult.BUSY,
    call_events.DialOutcome.NO_ANSWER: DialResult.NO_ANSWER,
    call_events.DialOutcome.FAILED: DialResult.FAILED,
    call_events.DialOutcome.MACHINE: DialResult.MACHINE,
}
_ESTIMATOR_OUTCOMES = {
    DialResult.BUSY: DialOutcome.BUSY,
    DialResult.NO_ANSWER: DialOutcome.NO_ANSWER,
    DialResult.FAILED: DialOutcome.FAILED,
    DialResult.MACHINE: DialOutcome.MACHINE,
}
#: How the acd's agent facts move an agent on the dialer's floor (None: leaves the floor).
_AGENT_STATES: dict[type[StreamedEvent], str | None] = {
    agent_events.AgentLoggedIn: "paused",
    agent_events.AgentLoggedOut: None,
    agent_events.AgentBecameAvailable: "available",
    agent_events.AgentPaused: "paused",
    agent_events.AgentNotResponding: "paused",
    agent_events.AgentReserved: "on_call",
    agent_events.AgentBecameBusy: "on_call",
    agent_events.WrapUpStarted: "wrap_up",
}


@dataclass(frozen=True)
class CampaignProgress:
    """How far a campaign has got, as ``GetCampaign`` reports it."""

    contacts_remaining: int
    """Contacts still to be dialled or retried (dials in flight included)."""
    dial_level: float
    """Dials per free agent of the last pacing decision (0 before the first one)."""
    abandon_rate_today: float
    abandon_rate_30d: float
    """Compliance abandonment by the campaign's formula, today and over the rolling 30 days
    (the days are the pacing's own, so these are the rates the pacing holds to its target)."""


@dataclass
class _CampaignRun:
    """What the loop keeps in memory per campaign: the dial level of its last decision."""

    dial_level: float = 0.0


class DialingLoop:
    """Paces and places the dials of every running campaign, and learns from outcomes."""

    def __init__(
        self,
        store: EventStore,
        pool: asyncpg.Pool,
        gateway: CallControl,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._pool = pool
        self._gateway = gateway
        self._clock = clock
        self._runs: dict[tuple[str, str], _CampaignRun] = {}

    def _now(self) -> datetime:
        return self._clock()

    def _run(self, tenant: str, campaign_id: str) -> _CampaignRun:
        return self._runs.setdefault((tenant, campaign_id), _CampaignRun())

    # -- the loop -------------------------------------------------------------------------

    async def follow(self, stop: asyncio.Event, tick_seconds: float = 1.0) -> None:
        """Tick until ``stop`` (each tick first sends what a crash or an outage left unsent)."""
        while not stop.is_set():
            try:
                await self.tick()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("dialer.tick_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_seconds)

    async def tick(self) -> int:
        """One pacing round over every running campaign; the number of dials sent."""
        await self.resend_unsent()
        now = self._now()
        rows = await self._pool.fetch(
            "select tenant, campaign_id, settings, list_version from campaign_status "
            "where status = 'running'"
        )
        sent = 0
        for row in rows:
            created = CampaignCreated.model_validate(json.loads(row["settings"]))
            if not created.calling_window.is_open(now):
                continue
            sent += await self._pace(row["tenant"], created, row["list_version"], now)
        return sent

    async def _pace(
        self, tenant: str, campaign: CampaignCreated, list_version: int, now: datetime
    ) -> int:
        run = self._run(tenant, campaign.campaign_id)
        floor = await self._floor(tenant, campaign, now)
        policy = _policy(campaign)
        async with self._pool.acquire() as conn:
            estimator = await _measurements(conn, tenant, campaign.campaign_id)
        decision = decide_dials(policy, estimator.estimates(), floor, now.date())
        run.dial_level = (decision.dials + len(floor.dialling)) / max(1, floor.available)
        if decision.dials <= 0:
            return 0
        orders = await self._take(tenant, campaign, list_version, decision.dials, now)
        for order in orders:
            await self._send(order, campaign, run.dial_level)
        return len(orders)

    async def measurements(self, tenant: str, campaign_id: str) -> PacingEstimator:
        """What the campaign's pacing has learned so far (cold before its first fact)."""
        async with self._pool.acquire() as conn:
            return await _measurements(conn, tenant, campaign_id)

    async def progress(self, tenant: str, campaign: CampaignCreated) -> CampaignProgress:
        """The campaign's remaining contacts, dial level and abandonment rates now."""
        async with self._pool.acquire() as conn:
            remaining = await conn.fetchval(
                "select count(*) from dial_plans "
                "where tenant = $1 and campaign_id = $2 and done is null",
                tenant,
                campaign.campaign_id,
            )
            estimator = await _measurements(conn, tenant, campaign.campaign_id)
        run = self._runs.get((tenant, campaign.campaign_id))
        policy = _policy(campaign)
        today = self._now().date()
        rates = [
            counts.ofcom_rate() if policy.formula is AbandonFormula.OFCOM else counts.us_rate()
            for counts in (estimator.ledger.day(today), estimator.ledger.rolling(today))
        ]
        return CampaignProgress(
            contacts_remaining=int(remaining),
            dial_level=run.dial_level if run is not None else 0.0,
            abandon_rate_today=rates[0],
            abandon_rate_30d=rates[1],
        )

    async def _floor(self, tenant: str, campaign: CampaignCreated, now: datetime) -> FloorState:
        required = await self._pool.fetchval(
            "select required from queue_skills where tenant = $1 and queue_id = $2",
            tenant,
            campaign.queue_id,
        )
        # The campaign's floor: agents who have the queue's skills and the campaign's own.
        needed = sorted({*(required or []), *campaign.required_skills})
        agents = await self._pool.fetch(
            "select state, since from floor_agents where tenant = $1 and skills @> $2",
            tenant,
            needed,
        )
        dialling = await self._pool.fetch(
            "select started_at from dial_attempts "
            "where tenant = $1 and campaign_id = $2 and result is null",
            tenant,
            campaign.campaign_id,
        )

        def elapsed(at: datetime) -> float:
            return max(0.0, (now - at).total_seconds())

        return FloorState(
            available=sum(1 for a in agents if a["state"] == "available"),
            on_call=tuple(elapsed(a["since"]) for a in agents if a["state"] == "on_call"),
            wrap_up=tuple(elapsed(a["since"]) for a in agents if a["state"] == "wrap_up"),
            paused=sum(1 for a in agents if a["state"] == "paused"),
            dialling=tuple(elapsed(d["started_at"]) for d in dialling),
        )

    async def _take(
        self,
        tenant: str,
        campaign: CampaignCreated,
        list_version: int,
        wanted: int,
        now: datetime,
    ) -> list[_Order]:
        """Check and record up to ``wanted`` due contacts' dials; the allowed ones to send."""
        rules = RetryRules.of(campaign)
        orders: list[_Order] = []
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "select p.contact_id, p.number, p.attempts, p.not_before, c.allowed, "
                "exists (select 1 from do_not_call d where d.tenant = p.tenant "
                "        and d.number = p.number) as dnc "
                "from dial_plans p left join contacts c "
                "  on c.tenant = p.tenant and c.contact_id = p.contact_id "
                "where p.tenant = $1 and p.campaign_id = $2 and p.done is null "
                "and p.in_flight is null and p.not_before <= $3 "
                "order by p.not_before, c.line, p.contact_id limit $4 for update of p skip locked",
                tenant,
                campaign.campaign_id,
                now,
                wanted,
            )
            appends: list[StreamAppend] = []
            for row in rows:
                plan = ContactPlan(
                    row["contact_id"],
                    campaign.campaign_id,
                    row["number"],
                    attempts=row["attempts"],
                    not_before=row["not_before"],
                )
                attempt_id = str(uuid6.uuid7())
                context = DialContext(
                    rules=rules,
                    window=campaign.calling_window,
                    list_version=list_version,
                    still_allowed=bool(row["allowed"]),
                    on_do_not_call=bool(row["dnc"]),
                    campaign_running=True,
                )
                record = check_dial(plan, attempt_id, context, now)
                events: list[StreamedEvent] = [record]
                if record.decision == "allowed":
                    await self._start_attempt(conn, tenant, dialled(plan, attempt_id), now)
                    orders.append(_Order(tenant, plan, attempt_id, list_version))
                else:
                    await self._refused(conn, tenant, plan, record.refusal or "", campaign, now)
                appends.append(
                    StreamAppend(
                        record.stream_id(tenant), [NewEvent(e, tenant=tenant) for e in events]
                    )
                )
            await self._store.append_many(appends, conn=conn)
            if orders:
                # The dials placed count in the day's ledger from the commit that places them
                # (after the append: the store's lock, then the measurements' row, as in
                # the consumer's transactions).
                await self._learn(
                    conn,
                    tenant,
                    campaign.campaign_id,
                    [DialPlaced(day=now.date()) for _ in orders],
                    now,
                )
        return orders

    async def _start_attempt(
        self, conn: Connection, tenant: str, plan: ContactPlan, now: datetime
    ) -> None:
        await conn.execute(
            "update dial_plans set attempts = $3, in_flight = $4, not_before = null "
            "where tenant = $1 and contact_id = $2",
            tenant,
            plan.contact_id,
            plan.attempts,
            plan.in_flight,
        )
        await conn.execute(
            "insert into dial_attempts (attempt_id, tenant, campaign_id, contact_id, number, "
            "started_at) values ($1, $2, $3, $4, $5, $6)",
            plan.in_flight,
            tenant,
            plan.campaign_id,
            plan.contact_id,
            plan.number,
            now,
        )

    async def _refused(  # noqa: PLR0917 - the refusal and everything it is about
        self,
        conn: Connection,
        tenant: str,
        plan: ContactPlan,
        refusal: str,
        campaign: CampaignCreated,
        now: datetime,
    ) -> None:
        if refusal == "outside_calling_window":
            opening = next_opening(campaign.calling_window, now)
            await conn.execute(
                "update dial_plans set not_before = $3, done = $4 "
                "where tenant = $1 and contact_id = $2",
                tenant,
                plan.contact_id,
                opening,
                None if opening else "no_window",
            )
            return
        await conn.execute(
            "update dial_plans set done = $3, not_before = null "
            "where tenant = $1 and contact_id = $2",
            tenant,
            plan.contact_id,
            refusal,
        )

    async def _send(
        self, order: _Order, campaign: CampaignCreated, dial_level: float | None
    ) -> None:
        dial = await self._gateway.originate(
            order.tenant,
            attempt_id=order.attempt_id,
            campaign_id=campaign.campaign_id,
            contact_id=order.plan.contact_id,
            number=order.plan.number,
            ring_timeout_s=campaign.ring_timeout_s,
        )
        await self._sent(order, dial, dial_level)

    async def _sent(self, order: _Order, dial: Dialled, dial_level: float | None) -> None:
        if dial.unreached:
            # Not known to have reached the gateway: the next tick sends it again.
            log.warning("dialer.originate_unreached", attempt=order.attempt_id, detail=dial.detail)
            return
        attempted = DialAttempted(
            contact_id=order.plan.contact_id,
            campaign_id=order.plan.campaign_id,
            attempt_id=order.attempt_id,
            attempt_number=order.plan.attempts + 1,
            number=order.plan.number,
            list_version=max(order.list_version, 1),
            call_id=dial.call_id,
            dial_level=round(dial_level, 3) if dial_level is not None else None,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await self._store.append(
                attempted.stream_id(order.tenant),
                [NewEvent(attempted, tenant=order.tenant)],
                conn=conn,
            )
            await conn.execute(
                "update dial_attempts set sent = true, call_id = $2 where attempt_id = $1",
                order.attempt_id,
                dial.call_id,
            )
            if dial.refused:
                # The gateway refused (not allowed there, trunk full...): the dial ended.
                await self._resolve(conn, order.tenant, order.attempt_id, DialResult.FAILED)

    async def resend_unsent(self) -> int:
        """Send again what a crash left between its record and its confirmation (the gateway
        answers a repeated request id with its first answer: no second dial)."""
        rows = await self._pool.fetch(
            "select a.attempt_id, a.tenant, a.campaign_id, a.contact_id, a.number, "
            "p.attempts, s.settings, s.list_version from dial_attempts a "
            "join dial_plans p on p.tenant = a.tenant and p.contact_id = a.contact_id "
            "join campaign_status s on s.tenant = a.tenant and s.campaign_id = a.campaign_id "
            "where not a.sent and a.result is null"
        )
        for row in rows:
            campaign = CampaignCreated.model_validate(json.loads(row["settings"]))
            plan = ContactPlan(
                row["contact_id"], row["campaign_id"], row["number"], row["attempts"] - 1
            )
            order = _Order(row["tenant"], plan, row["attempt_id"], row["list_version"])
            await self._send(order, campaign, None)
        if rows:
            log.info("dialer.resent", attempts=len(rows))
        return len(rows)

    # -- what the dialer learns ---------------------------------------------------------------

    async def apply(self, conn: Connection, envelope: Envelope) -> None:
        """One fact of the gateway or the acd, in the consumer's transaction."""
        try:
            fact = parse(envelope)
        except UnknownEventError:
            return
        tenant = envelope.tenant
        if isinstance(fact, QueueConfigured):
            await conn.execute(
                "insert into queue_skills (tenant, queue_id, required) values ($1, $2, $3) "
                "on conflict (tenant, queue_id) do update set required = excluded.required",
                tenant,
                fact.queue_id,
                list(fact.required_skills),
            )
            return
        if isinstance(fact, StreamedEvent) and type(fact) in _AGENT_STATES:
            await self._agent(conn, tenant, fact, envelope.occurred_at)
            return
        if isinstance(fact, call_events.CallOriginated | call_events.DialCompleted):
            # The gateway's facts may come before Originate's answer is recorded (a customer
            # who answers at once): link the call to its attempt here too, so that its
            # ``call.connected`` finds the attempt and ends it.
            await conn.execute(
                "update dial_attempts set call_id = $2 where attempt_id = $1 and call_id is null",
                fact.attempt_id,
                fact.call_id,
            )
        match fact:
            case call_events.DialCompleted() if fact.outcome in _RESULTS:
                await self._resolve(conn, tenant, fact.attempt_id, _RESULTS[fact.outcome])
            case call_events.ComplianceAbandoned():
                await self._resolve(conn, tenant, fact.attempt_id, DialResult.COMPLIANCE_ABANDONED)
            case call_events.CallConnected():
                attempt = await conn.fetchval(
                    "select attempt_id from dial_attempts where call_id = $1 and result is null",
                    fact.call_id,
                )
                if attempt is not None:
                    await self._resolve(conn, tenant, attempt, DialResult.CONNECTED)

    async def _agent(
        self, conn: Connection, tenant: str, fact: StreamedEvent, at: datetime
    ) -> None:
        agent_id = str(getattr(fact, "agent_id", ""))
        state = _AGENT_STATES[type(fact)]
        if state is None:
            await conn.execute(
                "delete from floor_agents where tenant = $1 and agent_id = $2", tenant, agent_id
            )
            return
        skills = getattr(fact, "skills", None)
        await conn.execute(
            "insert into floor_agents (tenant, agent_id, state, since, skills) "
            "values ($1, $2, $3, $4, coalesce($5, '{}'::text[])) "
            "on conflict (tenant, agent_id) do update set state = excluded.state, "
            "since = excluded.since, skills = coalesce($5, floor_agents.skills)",
            tenant,
            agent_id,
            state,
            at,
            [s.name for s in skills] if skills is not None else None,
        )

    async def _resolve(
        self, conn: Connection, tenant: str, attempt_id: str, result: DialResult
    ) -> None:
        """The dial in flight ended: record it and plan the contact's next attempt."""
        row = await conn.fetchrow(
            "update dial_attempts set result = $2 where attempt_id = $1 and result is null "
            "returning tenant, campaign_id, contact_id, number, started_at",
            attempt_id,
            result.value,
        )
        if row is None:
            return  # not ours, or already resolved (a redelivered fact)
        settings = await conn.fetchrow(
            "select settings from campaign_status where tenant = $1 and campaign_id = $2",
            tenant,
            row["campaign_id"],
        )
        plan_row = await conn.fetchrow(
            "select attempts from dial_plans where tenant = $1 and contact_id = $2 "
            "and in_flight = $3",
            tenant,
            row["contact_id"],
            attempt_id,
        )
        if settings is None or plan_row is None:
            return
        campaign = CampaignCreated.model_validate(json.loads(settings["settings"]))
        now = self._now()
        plan = ContactPlan(
            row["contact_id"],
            row["campaign_id"],
            row["number"],
            attempts=plan_row["attempts"],
            in_flight=attempt_id,
        )
        plan, scheduled = after_outcome(
            plan, result, RetryRules.of(campaign), campaign.calling_window, now
        )
        await conn.execute(
            "update dial_plans set in_flight = null, not_before = $3, done = $4 "
            "where tenant = $1 and contact_id = $2",
            tenant,
            plan.contact_id,
            plan.not_before,
            plan.done,
        )
        if scheduled is not None:
            await self._store.append(
                scheduled.stream_id(tenant), [NewEvent(scheduled, tenant=tenant)], conn=conn
            )
        await self._learn(
            conn,
            tenant,
            row["campaign_id"],
            _observations(result, now - row["started_at"], now.date()),
            now,
        )

    async def _learn(
        self,
        conn: Connection,
        tenant: str,
        campaign_id: str,
        observations: Sequence[Observation],
        now: datetime,
    ) -> None:
        """Feed the campaign's estimator, in the caller's transaction (under its row lock)."""
        estimator = await _measurements(conn, tenant, campaign_id, for_update=True)
        for observation in observations:
            estimator = estimator.observe(observation)
        await conn.execute(
            "insert into pacing_measurements (tenant, campaign_id, measurements, updated_at) "
            "values ($1, $2, $3::jsonb, $4) on conflict (tenant, campaign_id) do update set "
            "measurements = excluded.measurements, updated_at = excluded.updated_at",
            tenant,
            campaign_id,
            json.dumps(snapshot(estimator)),
            now,
        )


async def _measurements(
    conn: Connection, tenant: str, campaign_id: str, *, for_update: bool = False
) -> PacingEstimator:
    """The campaign's estimator as last written (cold when there is none, or when it cannot
    be read: the priors are the safe side)."""
    stored = await conn.fetchval(
        "select measurements from pacing_measurements where tenant = $1 and campaign_id = $2"
        + (" for update" if for_update else ""),
        tenant,
        campaign_id,
    )
    if stored is None:
        return PacingEstimator.cold()
    try:
        return from_snapshot(json.loads(stored))
    except SnapshotError as exc:
        log.warning("dialer.pacing_snapshot_unreadable", campaign=campaign_id, error=str(exc))
        return PacingEstimator.cold()


def _observations(result: DialResult, took: timedelta, day: date) -> Sequence[Observation]:
    """What an outcome teaches the estimator."""
    seconds = max(0.0, took.total_seconds())
    if result is DialResult.CONNECTED:
        return (
            DialResolved(day=day, outcome=DialOutcome.LIVE, seconds=seconds),
            LiveAnswerConnected(day=day, wait_seconds=0.0),
        )
    if result is DialResult.COMPLIANCE_ABANDONED:
        return (
            DialResolved(day=day, outcome=DialOutcome.LIVE, seconds=seconds),
            ComplianceAbandon(day=day),
        )
    return (DialResolved(day=day, outcome=_ESTIMATOR_OUTCOMES[result], seconds=seconds),)


@dataclass(frozen=True)
class _Order:
    """An allowed dial, recorded as in flight, to be sent."""

    tenant: str
    plan: ContactPlan
    attempt_id: str
    list_version: int


#: The dialer's consumer group and the name of its checkpoints.
CONSUMER = "dialer"


def outcomes_consumer(
    loop: DialingLoop, pool: asyncpg.Pool, bootstrap: str, *, consumer: str = CONSUMER
) -> EventConsumer:
    """The consumer of the gateway's call facts and the acd's agent and queue facts."""
    return EventConsumer(
        pool,
        bootstrap,
        consumer=consumer,
        topics=[Topic.CALLS, Topic.AGENTS, Topic.ROUTING],
        handler=loop.apply,
    )
