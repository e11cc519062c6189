"""The gateway's call facts (topic ``plateau.calls``) as triggers of the distributor.

Each fact is handled inside ``apply_once``'s transaction (``EventConsumer``): the decision
it leads to is appended on the same connection, so the fact's checkpoint and its decision
commit together, and a redelivered fact decides nothing.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from plateau_acd.domain import agent as agents
from plateau_acd.domain import routing
from plateau_acd.domain.agent import AgentStatus
from plateau_acd.handlers import Acd, TenantBook
from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import Envelope
from plateau_contracts.events.calls import (
    AgentNoAnswer,
    AgentRejected,
    AgentRinging,
    CallConnected,
    CallEnded,
    CallOffered,
    ExtensionUnregistered,
)
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection

CONSUMER = "acd-calls"

log = structlog.get_logger(__name__)


def trigger_of(acd: Acd, envelope: Envelope) -> routing.Trigger | None:
    """The distributor's trigger for a call fact, or None for facts the acd ignores."""
    try:
        fact = parse(envelope)
    except UnknownEventError:
        return None
    at = envelope.occurred_at
    trigger: routing.Trigger | None = None
    match fact:
        case CallOffered():
            trigger = routing.CallArrived(fact.call_id, at, dnis=fact.dnis, ani=fact.ani)
        case CallConnected():
            trigger = routing.CallAnswered(fact.call_id, fact.agent_id, at)
        case AgentNoAnswer():
            trigger = routing.RingNoAnswer(fact.call_id, fact.agent_id, at)
        case AgentRejected():
            trigger = routing.AgentLegFailed(fact.call_id, fact.agent_id, fact.reason, at)
        case CallEnded():
            trigger = routing.CallHungUp(fact.call_id, at)
        case ExtensionUnregistered() if fact.reason != "gateway_restart":
            # Softphones register again after a gateway restart; other losses end the
            # session of an agent who is not on a call.
            trigger = _logout_on(acd.book(envelope.tenant), fact.extension, at)
    return trigger


def _logout_on(book: TenantBook, extension: str, at: datetime) -> routing.Trigger | None:
    for agent in book.state.agents.values():
        if (
            agent.extension == extension
            and agent.status not in (AgentStatus.RESERVED, AgentStatus.RINGING)
            and agents.is_allowed(agent.status, agents.Logout())
        ):
            # A reserved agent's leg fails by itself and says so (``not_registered``).
            return routing.AgentCommand(agent.agent_id, agents.Logout("extension_unregistered"), at)
    return None


async def handle(acd: Acd, conn: Connection, envelope: Envelope) -> None:
    """Apply one call fact: note ringing, or decide and record in the consumer's transaction."""
    if envelope.type == AgentRinging.event_type:
        fact = parse(envelope)
        assert isinstance(fact, AgentRinging)
        acd.note_ringing(envelope.tenant, fact, envelope.occurred_at)
        return
    trigger = trigger_of(acd, envelope)
    if trigger is None:
        return
    try:
        await acd.decide(envelope.tenant, trigger, conn=conn, causation_id=envelope.event_id)
    except agents.AgentDomainError as exc:
        # The agent moved on since the fact was read (say, logged out already): nothing to do.
        log.info("acd.fact_ignored", type=envelope.type, reason=str(exc))


def calls_consumer(
    acd: Acd,
    pool: asyncpg.Pool,
    bootstrap: str,
    *,
    tenants: frozenset[str] | None = None,
    consumer: str = CONSUMER,
) -> EventConsumer:
    """The consumer of ``plateau.calls`` (Kafka group ``acd-calls``); with ``tenants``,
    facts of other tenants are passed over (another acd serves them)."""

    async def handler(conn: Connection, envelope: Envelope) -> None:
        acd.discard_uncommitted()
        if tenants is None or envelope.tenant in tenants:
            await handle(acd, conn, envelope)

    async def after_commit(envelope: Envelope) -> None:
        await acd.committed()

    return EventConsumer(
        pool,
        bootstrap,
        consumer=consumer,
        topics=[Topic.CALLS],
        handler=handler,
        after_commit=after_commit,
    )
