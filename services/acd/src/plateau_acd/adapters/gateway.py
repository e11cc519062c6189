"""The gateway as the acd sees it: a port with the two routing commands it sends, and its
gRPC adapter (``CallControl`` stubs from the contracts, never the gateway's code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

import grpc

from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.grpc_server import TENANT_METADATA_KEY, insecure_channel


class Outcome(StrEnum):
    """How the gateway answered a routing command."""

    ACCEPTED = "accepted"
    CALL_GONE = "call_gone"  # NOT_FOUND: the gateway no longer knows the call
    REFUSED = "refused"  # FAILED_PRECONDITION: the call is not waiting (events will tell)
    UNAVAILABLE = "unavailable"  # unreachable or too slow: worth another try
    FAILED = "failed"  # anything else: retrying will not help


@dataclass(frozen=True)
class Answer:
    """The gateway's answer to one command, with its status text for the log."""

    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class ConnectRequest:
    """Ring an agent for a reserved call (``CallControl.ConnectAgent``)."""

    tenant: str
    request_id: str  # the id of the ``call.agent_reserved`` event
    call_id: str
    agent_id: str
    extension: str
    queue_id: str
    ring_timeout_s: int


class Gateway(Protocol):
    """The routing commands the acd sends to the sip-gateway."""

    async def connect_agent(self, request: ConnectRequest) -> Answer:
        """Ask the gateway to ring the agent and bridge the call on answer."""
        ...

    async def hang_up(self, tenant: str, request_id: str, call_id: str, no_queue: bool) -> Answer:
        """Ask the gateway to end a call routing gave up on."""
        ...


_OUTCOMES = {
    grpc.StatusCode.NOT_FOUND: Outcome.CALL_GONE,
    grpc.StatusCode.FAILED_PRECONDITION: Outcome.REFUSED,
    grpc.StatusCode.UNAVAILABLE: Outcome.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Outcome.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Outcome.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: Outcome.UNAVAILABLE,
}


class GrpcGateway:
    """``Gateway`` over gRPC; the channel carries trace context, the tenant goes in metadata."""

    def __init__(self, target: str, timeout_s: float = 5.0) -> None:
        self._target = target
        self._timeout = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.CallControlStub | None = None

    def _call_control(self) -> pb_grpc.CallControlStub:
        if self._stub is None:
            self._channel = insecure_channel(self._target)
            self._stub = pb_grpc.CallControlStub(self._channel)
        return self._stub

    async def connect_agent(self, request: ConnectRequest) -> Answer:
        message = pb.ConnectAgentRequest(
            request_id=request.request_id,
            call_id=request.call_id,
            agent_id=request.agent_id,
            extension=request.extension,
            queue_id=request.queue_id,
        )
        message.ring_timeout.FromTimedelta(timedelta(seconds=request.ring_timeout_s))
        try:
            await self._call_control().ConnectAgent(
                message, metadata=((TENANT_METADATA_KEY, request.tenant),), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            return _answer(exc)
        return Answer(Outcome.ACCEPTED)

    async def hang_up(self, tenant: str, request_id: str, call_id: str, no_queue: bool) -> Answer:
        reason = pb.HANGUP_REASON_UNKNOWN_DESTINATION if no_queue else pb.HANGUP_REASON_NO_AGENT
        message = pb.HangupRequest(request_id=request_id, call_id=call_id, reason=reason)
        try:
            await self._call_control().Hangup(
                message, metadata=((TENANT_METADATA_KEY, tenant),), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            return _answer(exc)
        return Answer(Outcome.ACCEPTED)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None


def _answer(exc: grpc.aio.AioRpcError) -> Answer:
    code = exc.code()
    return Answer(_OUTCOMES.get(code, Outcome.FAILED), f"{code.name}: {exc.details()}")
