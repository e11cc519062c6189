"""What the acd knows of the dialer's campaigns and dials, to route live outbound answers.

The dialer's ``campaign.created`` names the queue a campaign's live answers are offered
to; the gateway's ``call.originated`` names the campaign, contact and (preview) agent of a
dial; its ``call.dial_completed`` with outcome ``answered`` is the live answer. Both are
kept in the acd's own tables (``campaigns``, ``outbound_calls``), written in the consuming
transaction next to the consumer's checkpoint, and mirrored in memory for the decisions
(the acd never reads the dialer's tables).

An answer becomes ``routing.CallArrived`` in the campaign's queue, direction
``outbound``, ahead of inbound calls: from there it takes the same decision path as an
inbound call (reservation explained in ``call.agent_reserved``, ``ConnectAgent`` with the
reservation's event id). The gateway holds an answer 2 s at most: its
``call.compliance_abandoned`` (or ``call.ended``) takes the call out of the queue.

Ordering across topics: ``campaign.created`` (topic ``plateau.dialer``) is recorded before
the campaign can dial, so its answer (``plateau.calls``) reaches an acd that does not know
the campaign only when the acd's dialer consumer lags far behind. Then the answer is
refused (``call.routing_failed`` naming the campaign) and left to the gateway, which
abandons it after 2 s and counts it against the campaign; the acd does not wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from plateau_acd.domain import routing
from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import Envelope
from plateau_contracts.events.calls import (
    CallEnded,
    CallOriginated,
    ComplianceAbandoned,
    DialCompleted,
    DialOutcome,
    DialRequester,
)
from plateau_contracts.events.dialer import (
    CampaignCreated,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignStopped,
)
from plateau_runtime.db import Connection

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Campaign:
    """A campaign as the acd needs it: the queue its live answers go to."""

    tenant: str
    campaign_id: str
    name: str
    queue_id: str
    state: str
    required_skills: tuple[str, ...] = ()  # on top of the queue's


@dataclass(frozen=True)
class Origination:
    """An outbound call in progress, from its ``call.originated``."""

    tenant: str
    call_id: str
    campaign_id: str
    contact_id: str
    attempt_id: str
    number: str
    agent_id: str | None
    requested_by: str


def _campaign(row: asyncpg.Record) -> Campaign:
    return Campaign(**{**dict(row), "required_skills": tuple(row["required_skills"])})


_STATES: dict[type, str] = {
    CampaignStarted: "running",
    CampaignResumed: "running",
    CampaignPaused: "paused",
    CampaignStopped: "stopped",
}


class Outbound:
    """The acd's campaigns and outbound calls in progress (tables, mirrored in memory)."""

    def __init__(self) -> None:
        self._campaigns: dict[tuple[str, str], Campaign] = {}
        self._calls: dict[tuple[str, str], Origination] = {}

    async def load(self, conn: Connection) -> None:
        """Read both tables (at start, before consuming)."""
        for row in await conn.fetch(
            "select tenant, campaign_id, name, queue_id, state, required_skills from campaigns"
        ):
            self.know_campaign(_campaign(row))
        for row in await conn.fetch(
            "select tenant, call_id, campaign_id, contact_id, attempt_id, number, agent_id, "
            "requested_by from outbound_calls"
        ):
            self.know_call(Origination(**dict(row)))

    def know_campaign(self, campaign: Campaign) -> None:
        """Remember a campaign (as its table row says)."""
        self._campaigns[(campaign.tenant, campaign.campaign_id)] = campaign

    def know_call(self, call: Origination) -> None:
        """Remember an outbound call in progress (as its table row says)."""
        self._calls[(call.tenant, call.call_id)] = call

    def campaign(self, tenant: str, campaign_id: str) -> Campaign | None:
        return self._campaigns.get((tenant, campaign_id))

    def origination(self, tenant: str, call_id: str) -> Origination | None:
        return self._calls.get((tenant, call_id))

    # -- the dialer's facts ----------------------------------------------------------------

    async def apply_dialer_fact(self, conn: Connection, envelope: Envelope) -> None:
        """Keep a campaign's queue and state, in the consumer's transaction."""
        try:
            fact = parse(envelope)
        except UnknownEventError:
            return
        tenant, at = envelope.tenant, envelope.occurred_at
        if isinstance(fact, CampaignCreated):
            row = await conn.fetchrow(
                "insert into campaigns (tenant, campaign_id, name, queue_id, state, updated_at, "
                "required_skills) values ($1, $2, $3, $4, 'created', $5, $6) "
                "on conflict (tenant, campaign_id) do update set name = excluded.name, "
                "queue_id = excluded.queue_id, required_skills = excluded.required_skills "
                "returning tenant, campaign_id, name, queue_id, state, required_skills",
                tenant,
                fact.campaign_id,
                fact.name,
                fact.queue_id,
                at,
                list(fact.required_skills),
            )
        elif type(fact) in _STATES:
            row = await conn.fetchrow(
                "update campaigns set state = $3, updated_at = $4 "
                "where tenant = $1 and campaign_id = $2 "
                "returning tenant, campaign_id, name, queue_id, state, required_skills",
                tenant,
                getattr(fact, "campaign_id", ""),
                _STATES[type(fact)],
                at,
            )
        else:
            return
        if row is not None:
            # Ahead of the commit: a rolled-back batch is redelivered and writes the same.
            campaign = _campaign(row)
            self.know_campaign(campaign)
            log.info(
                "acd.campaign_known",
                tenant=tenant,
                campaign_id=campaign.campaign_id,
                queue_id=campaign.queue_id,
                state=campaign.state,
            )

    # -- the gateway's facts ---------------------------------------------------------------

    async def note_originated(self, conn: Connection, envelopes: Sequence[Envelope]) -> None:
        """Keep the originations of a batch of call facts (before its decisions)."""
        for envelope in envelopes:
            if envelope.type != CallOriginated.event_type:
                continue
            fact = parse(envelope)
            assert isinstance(fact, CallOriginated)
            call = Origination(
                envelope.tenant,
                fact.call_id,
                fact.campaign_id,
                fact.contact_id,
                fact.attempt_id,
                fact.number,
                fact.agent_id,
                fact.requested_by.value,
            )
            await conn.execute(
                "insert into outbound_calls (tenant, call_id, campaign_id, contact_id, "
                "attempt_id, number, agent_id, requested_by, originated_at) "
                "values ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "on conflict (tenant, call_id) do nothing",
                call.tenant,
                call.call_id,
                call.campaign_id,
                call.contact_id,
                call.attempt_id,
                call.number,
                call.agent_id,
                call.requested_by,
                envelope.occurred_at,
            )
            self.know_call(call)

    async def forget_ended(self, conn: Connection, envelopes: Sequence[Envelope]) -> None:
        """Forget the outbound calls a batch ended (after its decisions)."""
        for envelope in envelopes:
            if envelope.type != CallEnded.event_type:
                continue
            fact = parse(envelope)
            assert isinstance(fact, CallEnded)
            key = (envelope.tenant, fact.call_id)
            if key in self._calls:
                await conn.execute(
                    "delete from outbound_calls where tenant = $1 and call_id = $2", *key
                )
                del self._calls[key]

    def trigger_of(self, tenant: str, fact: object, at: datetime) -> routing.Trigger | None:
        """The distributor's trigger for an outbound fact, or None for other facts."""
        match fact:
            case DialCompleted(outcome=DialOutcome.ANSWERED):
                return self._answered(tenant, fact, at)
            case ComplianceAbandoned():
                return routing.CallHungUp(fact.call_id, at, cause="compliance_abandon")
        return None

    def _answered(self, tenant: str, fact: DialCompleted, at: datetime) -> routing.Trigger | None:
        call = self.origination(tenant, fact.call_id)
        if call is not None and call.requested_by == DialRequester.AGENT_SOFTPHONE.value:
            return None  # the agent who dialled is connected by the gateway itself
        if call is None:
            log.warning("acd.answer_without_origination", tenant=tenant, call_id=fact.call_id)
        campaign = self.campaign(tenant, fact.campaign_id)
        return routing.CallArrived(
            fact.call_id,
            at,
            ani=call.number if call else None,
            queue_id=campaign.queue_id if campaign else None,
            direction="outbound",
            priority=routing.OUTBOUND_PRIORITY,
            campaign_id=fact.campaign_id,
            required_skills=campaign.required_skills if campaign else (),
            agent_id=call.agent_id if call else None,
        )
