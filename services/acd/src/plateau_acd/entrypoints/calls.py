"""The gateway's call facts (topic ``plateau.calls``) as triggers of the distributor.

The facts of each poll are handled together inside ``apply_batch_once``'s transaction
(``EventConsumer`` with a batch handler): the decisions they lead to are appended on the
same connection (``Acd.decide_facts``: one append lock, one catch-up, one append), so the
facts' checkpoints and their decisions commit together, and a redelivered fact decides
nothing. One transaction per poll instead of one per fact is what lets the acd keep up
with the gateway: under load a poll carries many facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import structlog

from plateau_acd.domain import agent as agents
from plateau_acd.domain import routing
from plateau_acd.domain.agent import AgentStatus
from plateau_acd.domain.routing import AcdState
from plateau_acd.handlers import Acd, Interpret, Interpretation
from plateau_acd.outbound import Outbound
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


def trigger_of(
    state: AcdState, envelope: Envelope, outbound: Outbound | None = None
) -> routing.Trigger | None:
    """The distributor's trigger for a call fact, or None for facts the acd ignores;
    without ``outbound``, live outbound answers are ignored too."""
    try:
        fact = parse(envelope)
    except UnknownEventError:
        return None
    at = envelope.occurred_at
    trigger: routing.Trigger | None = None
    if outbound is not None:
        trigger = outbound.trigger_of(envelope.tenant, fact, at)
        if trigger is not None:
            return trigger
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
            trigger = routing.CallHungUp(fact.call_id, at, cause=fact.cause.value)
        case ExtensionUnregistered() if fact.reason != "gateway_restart":
            # Softphones register again after a gateway restart; other losses end the
            # session of an agent who is not on a call.
            trigger = _logout_on(state, fact.extension, at)
    return trigger


def _logout_on(state: AcdState, extension: str, at: datetime) -> routing.Trigger | None:
    for agent in state.agents.values():
        if (
            agent.extension == extension
            and agent.status not in (AgentStatus.RESERVED, AgentStatus.RINGING)
            and agents.is_allowed(agent.status, agents.Logout())
        ):
            # A reserved agent's leg fails by itself and says so (``not_registered``).
            return routing.AgentCommand(agent.agent_id, agents.Logout("extension_unregistered"), at)
    return None


def interpreter(outbound: Outbound | None = None) -> Interpret:
    """What a call fact means to the acd: ringing to show, a trigger, or nothing."""

    def interpret(state: AcdState, envelope: Envelope) -> Interpretation:
        if envelope.type == AgentRinging.event_type:
            fact = parse(envelope)
            assert isinstance(fact, AgentRinging)
            return fact
        return trigger_of(state, envelope, outbound)

    return interpret


#: Call facts without the outbound part (the unit tests' and older callers').
interpret = interpreter()


async def handle_all(
    acd: Acd, conn: Connection, envelopes: Sequence[Envelope], outbound: Outbound | None = None
) -> None:
    """Apply call facts in order: decide and record in the consumer's transaction (with
    ``outbound``, its originations are kept first and ended calls forgotten after)."""
    if outbound is not None:
        await outbound.note_originated(conn, envelopes)
    await acd.decide_facts(conn, envelopes, interpreter(outbound))
    if outbound is not None:
        await outbound.forget_ended(conn, envelopes)


async def handle(
    acd: Acd, conn: Connection, envelope: Envelope, outbound: Outbound | None = None
) -> None:
    """Apply one call fact (``handle_all`` of one)."""
    await handle_all(acd, conn, [envelope], outbound)


def calls_consumer(
    acd: Acd,
    pool: asyncpg.Pool,
    bootstrap: str,
    *,
    tenants: frozenset[str] | None = None,
    consumer: str = CONSUMER,
    outbound: Outbound | None = None,
) -> EventConsumer:
    """The consumer of ``plateau.calls`` (Kafka group ``acd-calls``); with ``tenants``,
    facts of other tenants are passed over (another acd serves them); with ``outbound``,
    live outbound answers are routed too."""

    async def handler(conn: Connection, envelopes: Sequence[Envelope]) -> None:
        acd.discard_uncommitted()
        served = [e for e in envelopes if tenants is None or e.tenant in tenants]
        if served:
            await handle_all(acd, conn, served, outbound)

    async def after_commit(envelopes: Sequence[Envelope]) -> None:
        await acd.committed()

    return EventConsumer(
        pool,
        bootstrap,
        consumer=consumer,
        topics=[Topic.CALLS],
        batch_handler=handler,
        after_batch_commit=after_commit,
    )
