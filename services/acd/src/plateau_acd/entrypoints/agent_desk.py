"""``AgentDesk`` over gRPC: translate requests to agent commands, answers to messages.

The tenant comes from metadata (``x-plateau-tenant``); an agent is known to a tenant when
its configuration declares it, otherwise it is NOT_FOUND. A command the agent's state does
not allow is FAILED_PRECONDITION naming the state; an unknown pause code is
INVALID_ARGUMENT listing the tenant's codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from plateau_acd.domain import agent as agents
from plateau_acd.domain.agent import AgentState, AgentStatus
from plateau_acd.domain.queue import QueueConfig
from plateau_acd.domain.routing import AgentCommand, DeskCommand
from plateau_acd.handlers import Acd, TenantBook
from plateau_contracts.events.agents import Skill
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as pb
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as pb_grpc
from plateau_runtime.grpc_server import GrpcService, current_tenant

SERVICE_NAME = "plateau.agents.v1.AgentDesk"

_STATES = {
    AgentStatus.LOGGED_OUT: pb.AGENT_STATE_LOGGED_OUT,
    AgentStatus.AVAILABLE: pb.AGENT_STATE_AVAILABLE,
    AgentStatus.RESERVED: pb.AGENT_STATE_RESERVED,
    AgentStatus.RINGING: pb.AGENT_STATE_RINGING,
    AgentStatus.ON_CALL: pb.AGENT_STATE_ON_CALL,
    AgentStatus.WRAP_UP: pb.AGENT_STATE_WRAP_UP,
    AgentStatus.PAUSED: pb.AGENT_STATE_PAUSED,
    AgentStatus.NOT_RESPONDING: pb.AGENT_STATE_PAUSED,
}


class DeskRefusedError(Exception):
    """A desk request refused before it reaches the domain, with its gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _timestamp(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _duration(ms: int) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(milliseconds=ms))
    return duration


def agent_status(agent: AgentState) -> pb.AgentStatus:
    """An agent's state as the desk shows it (paused without a code: not yet available)."""
    state = _STATES[agent.status]
    if agent.status is AgentStatus.PAUSED and agent.pause_code is None:
        state = pb.AGENT_STATE_UNAVAILABLE
    return pb.AgentStatus(
        agent_id=agent.agent_id,
        state=state,
        state_since=_timestamp(agent.since),
        pause_code=agent.pause_code or "",
        extension=agent.extension or "",
        call_id=agent.call_id or "",
    )


def agent_update(book: TenantBook, agent: AgentState, now: datetime) -> pb.AgentUpdate:
    """The status of an agent and, while it holds one, the call (screen pop)."""
    update = pb.AgentUpdate(status=agent_status(agent))
    card = book.cards.get(agent.call_id) if agent.call_id else None
    if card is not None:
        queue = book.state.queues.get(card.queue_id)
        waiting = queue.find(card.call_id) if queue else None
        update.offered_call.CopyFrom(
            pb.OfferedCall(
                call_id=card.call_id,
                caller_number=card.ani or "",
                queue_id=card.queue_id,
                queue_name=(queue.config.name if queue else "") or card.queue_id,
                dnis=card.dnis or "",
                campaign_id=card.campaign_id or "",
                waited=_duration(waiting.waited_ms(now) if waiting else 0),
            )
        )
    return update


def qualifies(agent: AgentState, config: QueueConfig) -> bool:
    """Whether the agent has the skills a queue requires (whatever its state)."""
    for need in config.required_skills:
        level = agent.skill_level(need.name)
        if level is None or level < need.min_level:
            return False
    return True


def queue_snapshots(book: TenantBook, wanted: set[str], now: datetime) -> list[pb.QueueSnapshot]:
    """Live figures of the tenant's queues (all when ``wanted`` is empty), by queue id."""
    snapshots = []
    for queue_id in sorted(book.state.queues):
        if wanted and queue_id not in wanted:
            continue
        queue = book.state.queues[queue_id]
        waiting = queue.waiting()
        longest = max((call.waited_ms(now) for call in waiting), default=0)
        staff = [
            a for a in book.state.agents.values() if a.is_logged_in and qualifies(a, queue.config)
        ]
        on_call = (AgentStatus.RESERVED, AgentStatus.RINGING, AgentStatus.ON_CALL)
        paused = (AgentStatus.PAUSED, AgentStatus.NOT_RESPONDING)
        snapshots.append(
            pb.QueueSnapshot(
                queue_id=queue_id,
                name=queue.config.name or queue_id,
                calls_waiting=len(waiting),
                longest_wait=_duration(longest),
                agents_logged_in=len(staff),
                agents_available=sum(a.status is AgentStatus.AVAILABLE for a in staff),
                agents_on_call=sum(a.status in on_call for a in staff),
                agents_wrap_up=sum(a.status is AgentStatus.WRAP_UP for a in staff),
                agents_paused=sum(a.status in paused for a in staff),
            )
        )
    return snapshots


class AgentDeskServicer(pb_grpc.AgentDeskServicer):
    """Thin adapter over ``Acd``: every command is one recorded decision."""

    def __init__(self, acd: Acd) -> None:
        self._acd = acd

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentStatus:
        tenant = await _tenant(context)
        book = self._acd.book(tenant)
        profile = book.profiles.get(request.agent_id)
        if profile is None:
            await _abort_unknown(context, request.agent_id)
            raise AssertionError  # abort raises
        extension = request.extension or profile.extension
        skills = tuple(Skill(name=s.name, level=s.level or 1) for s in request.skills if s.name)
        command = agents.Login(
            extension=extension,
            skills=skills or profile.skills,
            allowed_pause_codes=book.pause_codes,
            ready=False,
        )

        def extension_free(current: TenantBook) -> None:
            for other in current.state.agents.values():
                if (
                    other.agent_id != request.agent_id
                    and other.is_logged_in
                    and other.extension == extension
                ):
                    raise DeskRefusedError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"extension {extension} is in use by agent {other.agent_id}",
                    )

        return await self._command(context, tenant, request.agent_id, command, extension_free)

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentStatus:
        tenant = await self._known(context, request.agent_id)
        return await self._command(context, tenant, request.agent_id, agents.Logout("requested"))

    async def SetAvailable(
        self, request: pb.SetAvailableRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentStatus:
        tenant = await self._known(context, request.agent_id)
        return await self._command(context, tenant, request.agent_id, agents.SetAvailable())

    async def Pause(
        self, request: pb.PauseRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentStatus:
        tenant = await self._known(context, request.agent_id)
        if not request.code:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a pause code is required")
        command = agents.Pause(request.code, self._acd.book(tenant).pause_codes)
        return await self._command(context, tenant, request.agent_id, command)

    async def CompleteWrapUp(
        self, request: pb.CompleteWrapUpRequest, context: grpc.aio.ServicerContext
    ) -> pb.AgentStatus:
        tenant = await self._known(context, request.agent_id)

        def same_call(current: TenantBook) -> None:
            agent = current.state.agent(request.agent_id)
            if request.call_id and agent.call_id != request.call_id:
                raise DeskRefusedError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"agent {request.agent_id} is wrapping up call {agent.call_id}, "
                    f"not {request.call_id}",
                )

        command = agents.CompleteWrapUp(disposition=request.disposition or None)
        return await self._command(context, tenant, request.agent_id, command, same_call)

    async def WatchAgent(
        self, request: pb.WatchAgentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AgentUpdate]:
        tenant = await self._known(context, request.agent_id)
        acd = self._acd
        wake = asyncio.Event()

        def listener(changed_tenant: str, agent_id: str) -> None:
            if changed_tenant == tenant and agent_id == request.agent_id:
                wake.set()

        unsubscribe = acd.subscribe(listener)
        try:
            last: pb.AgentUpdate | None = None
            while True:
                wake.clear()
                book = acd.book(tenant)
                update = agent_update(book, book.state.agent(request.agent_id), acd.now())
                if last is None or _differs(last, update):
                    last = update
                    yield update
                await wake.wait()
        finally:
            unsubscribe()

    async def QueueStatus(
        self, request: pb.QueueStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueueStatusResponse:
        tenant = await _tenant(context)
        book = self._acd.book(tenant)
        wanted = set(request.queue_ids)
        unknown = sorted(wanted - set(book.state.queues))
        if unknown:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown queue(s): {', '.join(unknown)}"
            )
        now = self._acd.now()
        return pb.QueueStatusResponse(
            queues=queue_snapshots(book, wanted, now), as_of=_timestamp(now)
        )

    async def _known(self, context: grpc.aio.ServicerContext, agent_id: str) -> str:
        tenant = await _tenant(context)
        if agent_id not in self._acd.book(tenant).profiles:
            # The acd may still be loading its store after a start, or the agent was
            # configured a moment ago: read what the store holds before refusing.
            await self._acd.refresh()
            if agent_id not in self._acd.book(tenant).profiles:
                await _abort_unknown(context, agent_id)
        return tenant

    async def _command(
        self,
        context: grpc.aio.ServicerContext,
        tenant: str,
        agent_id: str,
        command: DeskCommand,
        check: Callable[[TenantBook], None] | None = None,
    ) -> pb.AgentStatus:
        acd = self._acd
        try:
            await acd.decide(
                tenant,
                AgentCommand(agent_id, command, acd.now()),
                check=check,
            )
        except DeskRefusedError as exc:
            await context.abort(exc.code, str(exc))
        except agents.UnknownPauseCodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except agents.AgentDomainError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return agent_status(acd.book(tenant).state.agent(agent_id))


def _differs(last: pb.AgentUpdate, update: pb.AgentUpdate) -> bool:
    # The wait of an offered call grows by itself: only a change of state or call counts.
    return last.status != update.status or last.offered_call.call_id != (
        update.offered_call.call_id
    )


async def _tenant(context: grpc.aio.ServicerContext) -> str:
    tenant = current_tenant()
    if not tenant:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "send the tenant in metadata x-plateau-tenant"
        )
        raise AssertionError  # abort raises
    return tenant


async def _abort_unknown(context: grpc.aio.ServicerContext, agent_id: str) -> None:
    await context.abort(
        grpc.StatusCode.NOT_FOUND,
        f"unknown agent {agent_id!r}: declare it in the configuration (plateau config apply)",
    )


def agent_desk_service(acd: Acd) -> GrpcService:
    """The servicer, ready for the host's gRPC server."""
    return GrpcService(
        SERVICE_NAME, pb_grpc.add_AgentDeskServicer_to_server, AgentDeskServicer(acd)
    )
