"""``CallControl`` over gRPC: translate requests to B2BUA calls, errors to status codes."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import grpc
import structlog

from plateau_contracts.events.calls import DialRequester, TransferTarget
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.grpc_server import GrpcService, current_tenant
from plateau_sip_gateway.adapters.cluster import CallOwners
from plateau_sip_gateway.adapters.replicas import ReplicaClient
from plateau_sip_gateway.b2bua import (
    B2bua,
    CallNotFoundError,
    GatewayNotReadyError,
    NoOutboundTrunkError,
    SessionChangeError,
    TrunkFullError,
)
from plateau_sip_gateway.domain.allowlist import Allowed, Refused
from plateau_sip_gateway.domain.call import CallDomainError, HangupReason

SERVICE_NAME = "plateau.calls.v1.CallControl"
REFUSAL_METADATA_KEY = "x-plateau-refusal-reason"
FORWARDED_METADATA_KEY = "x-plateau-forwarded-by"
"""Set on a request one replica forwards to another: the owner answers, never forwards."""
FORWARD_TIMEOUT_S = 10.0
_REMEMBERED_REQUESTS = 10_000
T = TypeVar("T")

_HANGUP_REASONS = {
    pb.HANGUP_REASON_UNSPECIFIED: HangupReason.NORMAL,
    pb.HANGUP_REASON_NORMAL: HangupReason.NORMAL,
    pb.HANGUP_REASON_NO_AGENT: HangupReason.NO_AGENT,
    pb.HANGUP_REASON_UNKNOWN_DESTINATION: HangupReason.UNKNOWN_DESTINATION,
    pb.HANGUP_REASON_QUEUE_CLOSED: HangupReason.QUEUE_CLOSED,
}
_REQUESTERS = {
    pb.REQUESTER_DIALER: DialRequester.DIALER,
    pb.REQUESTER_INTEGRATOR: DialRequester.INTEGRATOR,
}


log = structlog.get_logger(__name__)


@dataclass
class Replicas:
    """This replica among several: who holds which call, and how to reach the others."""

    owners: CallOwners
    client: ReplicaClient

    @property
    def name(self) -> str:
        return self.owners.replica


class CallControlServicer(pb_grpc.CallControlServicer):
    """Thin adapter: the tenant from metadata, idempotency by ``request_id``.

    With ``replicas``, a call-scoped request for a call another replica holds is
    forwarded to it and its answer returned as is; an ``Originate`` claims its
    ``request_id`` for the tenant first, so a retry on another replica gets the same call.
    """

    def __init__(self, b2bua: B2bua, replicas: Replicas | None = None) -> None:
        self._b2bua = b2bua
        self._replicas = replicas
        self._answers: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    async def ConnectAgent(
        self, request: pb.ConnectAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectAgentResponse:
        tenant = await _tenant(context)
        if not request.call_id or not request.extension or not request.agent_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "call_id, agent_id and extension are required"
            )
        timeout = request.ring_timeout.ToTimedelta().total_seconds() or None

        async def connect() -> pb.ConnectAgentResponse:
            leg = self._b2bua.connect_agent(
                tenant,
                request.call_id,
                agent_id=request.agent_id,
                extension=request.extension,
                queue_id=request.queue_id or None,
                ring_timeout_s=timeout,
            )
            return pb.ConnectAgentResponse(agent_sip_call_id=leg)

        return await self._once(
            context, (tenant, "ConnectAgent", request.request_id), connect, request
        )

    async def Hangup(
        self, request: pb.HangupRequest, context: grpc.aio.ServicerContext
    ) -> pb.HangupResponse:
        tenant = await _tenant(context)
        reason = _HANGUP_REASONS.get(request.reason, HangupReason.NORMAL)

        async def hang_up() -> pb.HangupResponse:
            self._b2bua.hangup(tenant, request.call_id, reason)
            return pb.HangupResponse()

        return await self._once(context, (tenant, "Hangup", request.request_id), hang_up, request)

    async def Originate(
        self, request: pb.OriginateRequest, context: grpc.aio.ServicerContext
    ) -> pb.OriginateResponse:
        tenant = await _tenant(context)
        requested_by = _REQUESTERS.get(request.requested_by)
        if requested_by is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requested_by is required")
            raise AssertionError  # abort raises

        async def originate() -> pb.OriginateResponse:
            _ = self._b2bua.endpoint  # not listening yet: the allow-list may not be loaded
            number, campaign = request.number, request.campaign_id or None
            decision = self._b2bua.allowlist.check(tenant, campaign, number)
            if isinstance(decision, Refused):
                self._b2bua.refuse_dial(
                    tenant,
                    decision,
                    requested_by=requested_by,
                    requester=request.requester or requested_by.value,
                    campaign_id=campaign,
                    contact_id=request.contact_id or None,
                    attempt_id=request.attempt_id or None,
                )
                await _deny(context, decision, number)
            assert isinstance(decision, Allowed)
            claimed: str | None = None
            key = request.request_id or request.attempt_id
            if self._replicas is not None and key:
                # Claimed before dialling: a retry on another replica finds this call.
                fresh = str(uuid.uuid4())
                claimed = await self._replicas.owners.claim(tenant, key, fresh)
                if claimed != fresh:
                    return pb.OriginateResponse(call_id=claimed)
            try:
                call_id = self._b2bua.originate(
                    tenant,
                    decision,
                    attempt_id=request.attempt_id or request.request_id or "-",
                    requested_by=requested_by,
                    ring_timeout_s=request.ring_timeout.ToTimedelta().total_seconds() or None,
                    agent_id=request.agent_id or None,
                    call_id=claimed,
                )
            except Exception:
                if claimed is not None and self._replicas is not None:
                    await self._replicas.owners.release(claimed)
                raise
            return pb.OriginateResponse(call_id=call_id)

        return await self._once(context, (tenant, "Originate", request.request_id), originate)

    async def Transfer(
        self, request: pb.TransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        tenant = await _tenant(context)
        kind = request.WhichOneof("target")
        extension: str | None = None
        if kind == "agent":
            if not request.agent.agent_id or not request.agent.extension:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "an agent target needs agent_id and extension"
                )
            target = TransferTarget(kind="agent", agent_id=request.agent.agent_id)
            extension = request.agent.extension
        elif kind == "queue_id":
            target = TransferTarget(kind="queue", queue_id=request.queue_id)
        elif kind == "number":
            decision = self._b2bua.allowlist.check(tenant, None, request.number)
            if isinstance(decision, Refused):
                self._b2bua.refuse_dial(
                    tenant,
                    decision,
                    requested_by=DialRequester.INTEGRATOR,
                    requester=f"transfer of {request.call_id}",
                )
                await _deny(context, decision, request.number)
            assert isinstance(decision, Allowed)
            target = TransferTarget(kind="number", number=decision.number)
        else:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "set one target: agent, queue_id or number"
            )
            raise AssertionError  # abort raises

        async def transfer() -> pb.TransferResponse:
            await self._b2bua.transfer(tenant, request.call_id, target, extension=extension)
            return pb.TransferResponse()

        return await self._once(
            context, (tenant, "Transfer", request.request_id), transfer, request
        )

    async def Hold(
        self, request: pb.HoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.HoldResponse:
        tenant = await _tenant(context)

        async def hold() -> pb.HoldResponse:
            self._b2bua.hold(tenant, request.call_id)
            return pb.HoldResponse()

        return await self._once(context, (tenant, "Hold", request.request_id), hold, request)

    async def Resume(
        self, request: pb.ResumeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeResponse:
        tenant = await _tenant(context)

        async def resume() -> pb.ResumeResponse:
            self._b2bua.resume(tenant, request.call_id)
            return pb.ResumeResponse()

        return await self._once(context, (tenant, "Resume", request.request_id), resume, request)

    async def _once(
        self,
        context: grpc.aio.ServicerContext,
        key: tuple[str, str, str],
        act: Callable[[], Awaitable[T]],
        call_scoped: Any = None,
    ) -> T:
        """``act``'s answer, or the first answer to this ``(tenant, method, request_id)``;
        a domain error aborts with its status code. A ``call_scoped`` request for a call
        this replica does not hold goes to the replica that does."""
        if key[2] and key in self._answers:
            return self._answers[key]  # type: ignore[no-any-return]
        try:
            answer = await act()
        except CallNotFoundError as miss:
            if call_scoped is None or self._replicas is None:
                await _abort_for(context, miss)
                raise  # abort raises
            answer = await self._forward(context, key[0], key[1], call_scoped, miss)
        except Exception as exc:
            await _abort_for(context, exc)
            raise  # abort raises
        self._remember(key, answer)
        return answer

    async def _forward(
        self,
        context: grpc.aio.ServicerContext,
        tenant: str,
        method: str,
        request: Any,
        miss: CallNotFoundError,
    ) -> Any:
        """The owner's answer to ``request``, its status, details and ``x-plateau-*``
        trailing metadata passed on when it fails."""
        replicas = self._replicas
        assert replicas is not None
        incoming = [
            (str(k), v)
            for k, v in (context.invocation_metadata() or ())
            if isinstance(v, str) and str(k).startswith("x-plateau-")
        ]
        if any(k == FORWARDED_METADATA_KEY for k, _ in incoming):
            await context.abort(grpc.StatusCode.NOT_FOUND, str(miss))  # never twice
        try:
            owner = await replicas.owners.owner(tenant, request.call_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"call {request.call_id} is not held here and its owner cannot be looked up "
                f"({exc.__class__.__name__}); retry",
            )
            raise AssertionError from None  # abort raises
        if owner is None or owner.replica == replicas.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(miss))
            raise AssertionError  # abort raises
        metadata = [*incoming, (FORWARDED_METADATA_KEY, replicas.name)]
        remaining = context.time_remaining()
        timeout = FORWARD_TIMEOUT_S if remaining is None else max(0.1, remaining - 0.05)
        try:
            return await replicas.client.call(
                owner.address,
                method,
                request=request,
                response_type=getattr(pb, f"{method}Response"),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as failed:
            trailing = [
                (str(k), v)
                for k, v in (failed.trailing_metadata() or ())
                if isinstance(v, str) and str(k).startswith("x-plateau-")
            ]
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            code, details = failed.code(), failed.details() or ""
            if code is grpc.StatusCode.UNAVAILABLE:
                details = (
                    f"call {request.call_id} is held by replica {owner.replica} at "
                    f"{owner.address}, which is unavailable ({details}); retry"
                )
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.warning(
                    "sip_gateway.owner_unreachable",
                    call_id=request.call_id,
                    owner=owner.replica,
                    address=owner.address,
                    code=code.name,
                )
            await context.abort(code, details)
            raise AssertionError from None  # abort raises

    def _remember(self, key: tuple[str, str, str], answer: Any) -> None:
        if not key[2]:
            return
        self._answers[key] = answer
        while len(self._answers) > _REMEMBERED_REQUESTS:
            self._answers.popitem(last=False)


async def _tenant(context: grpc.aio.ServicerContext) -> str:
    tenant = current_tenant()
    if not tenant:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "send the tenant in metadata x-plateau-tenant"
        )
        raise AssertionError  # abort raises
    return tenant


async def _deny(context: grpc.aio.ServicerContext, refused: Refused, number: str) -> None:
    """PERMISSION_DENIED with the recorded refusal reason in the trailing metadata."""
    reason = refused.to_event("-", requested_by=DialRequester.DIALER, requester="-").reason
    context.set_trailing_metadata(((REFUSAL_METADATA_KEY, reason.value),))
    await context.abort(
        grpc.StatusCode.PERMISSION_DENIED, f"number {number} may not be dialled: {refused.detail}"
    )


async def _abort_for(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, CallNotFoundError):
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, CallDomainError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, GatewayNotReadyError | NoOutboundTrunkError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    if isinstance(exc, TrunkFullError):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, SessionChangeError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, ValueError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, TimeoutError):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the carrier did not answer")
    raise exc


def call_control_service(b2bua: B2bua, replicas: Replicas | None = None) -> GrpcService:
    """The servicer, ready for the host's gRPC server."""
    return GrpcService(
        SERVICE_NAME,
        pb_grpc.add_CallControlServicer_to_server,
        CallControlServicer(b2bua, replicas),
    )
