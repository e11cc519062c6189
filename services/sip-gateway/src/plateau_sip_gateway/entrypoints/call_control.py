"""``CallControl`` over gRPC: translate requests to B2BUA calls, errors to status codes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import grpc

from plateau_contracts.events.calls import DialRequester
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.grpc_server import GrpcService, current_tenant
from plateau_sip_gateway.b2bua import B2bua, CallNotFoundError, GatewayNotReadyError
from plateau_sip_gateway.domain.allowlist import Refused
from plateau_sip_gateway.domain.call import CallDomainError, HangupReason

SERVICE_NAME = "plateau.calls.v1.CallControl"
REFUSAL_METADATA_KEY = "x-plateau-refusal-reason"
_REMEMBERED_REQUESTS = 10_000

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


class CallControlServicer(pb_grpc.CallControlServicer):
    """Thin adapter: the tenant from metadata, idempotency by ``request_id``."""

    def __init__(self, b2bua: B2bua) -> None:
        self._b2bua = b2bua
        self._answers: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    async def ConnectAgent(
        self, request: pb.ConnectAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectAgentResponse:
        tenant = await _tenant(context)
        if not request.call_id or not request.extension or not request.agent_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "call_id, agent_id and extension are required"
            )
        key = (tenant, "ConnectAgent", request.request_id)
        if request.request_id and key in self._answers:
            return self._answers[key]  # type: ignore[no-any-return]
        timeout = request.ring_timeout.ToTimedelta().total_seconds() or None
        try:
            leg = self._b2bua.connect_agent(
                tenant,
                request.call_id,
                agent_id=request.agent_id,
                extension=request.extension,
                queue_id=request.queue_id or None,
                ring_timeout_s=timeout,
            )
        except Exception as exc:
            await _abort_for(context, exc)
        answer = pb.ConnectAgentResponse(agent_sip_call_id=leg)
        self._remember(key, answer)
        return answer

    async def Hangup(
        self, request: pb.HangupRequest, context: grpc.aio.ServicerContext
    ) -> pb.HangupResponse:
        tenant = await _tenant(context)
        key = (tenant, "Hangup", request.request_id)
        if request.request_id and key in self._answers:
            return self._answers[key]  # type: ignore[no-any-return]
        try:
            self._b2bua.hangup(
                tenant, request.call_id, _HANGUP_REASONS.get(request.reason, HangupReason.NORMAL)
            )
        except Exception as exc:
            await _abort_for(context, exc)
        answer = pb.HangupResponse()
        self._remember(key, answer)
        return answer

    async def Originate(
        self, request: pb.OriginateRequest, context: grpc.aio.ServicerContext
    ) -> pb.OriginateResponse:
        tenant = await _tenant(context)
        requested_by = _REQUESTERS.get(request.requested_by)
        if requested_by is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requested_by is required")
            raise AssertionError  # abort raises
        key = (tenant, "Originate", request.request_id)
        if request.request_id and key in self._answers:
            return self._answers[key]  # type: ignore[no-any-return]
        decision = self._b2bua.allowlist.check(tenant, request.campaign_id or None, request.number)
        if isinstance(decision, Refused):
            self._b2bua.refuse_dial(
                tenant,
                decision,
                requested_by=requested_by,
                requester=request.requester or requested_by.value,
                campaign_id=request.campaign_id or None,
                contact_id=request.contact_id or None,
                attempt_id=request.attempt_id or None,
            )
            event_reason = decision.to_event(
                "-", requested_by=requested_by, requester="-"
            ).reason.value
            context.set_trailing_metadata(((REFUSAL_METADATA_KEY, event_reason),))
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"number {request.number} may not be dialled: {decision.detail}",
            )
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "placing allowed outbound calls is not built yet"
        )
        raise AssertionError  # abort raises

    async def Transfer(
        self, request: pb.TransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "blind transfer is not built yet")
        raise AssertionError  # abort raises

    async def Hold(
        self, request: pb.HoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.HoldResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "hold is not built yet")
        raise AssertionError  # abort raises

    async def Resume(
        self, request: pb.ResumeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "resume is not built yet")
        raise AssertionError  # abort raises

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


async def _abort_for(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, CallNotFoundError):
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, CallDomainError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, GatewayNotReadyError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    raise exc


def call_control_service(b2bua: B2bua) -> GrpcService:
    """The servicer, ready for the host's gRPC server."""
    return GrpcService(
        SERVICE_NAME, pb_grpc.add_CallControlServicer_to_server, CallControlServicer(b2bua)
    )
