"""The gateway as the dialer sees it: ``CallControl.Originate`` over gRPC (the contracts'
stubs, never the gateway's code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import grpc

from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.grpc_server import TENANT_METADATA_KEY, insecure_channel

#: Worth sending again later with the same request id: the gateway was not reached, or was
#: too busy to answer.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True)
class Dialled:
    """The gateway's answer to one ``Originate``."""

    call_id: str | None = None
    refused: bool = False  # the gateway will not dial it (not allowed, trunk full, bad number)
    unreached: bool = False  # not known to have reached the gateway: send again
    detail: str = ""


class CallControl(Protocol):
    async def originate(
        self,
        tenant: str,
        *,
        attempt_id: str,
        campaign_id: str,
        contact_id: str,
        number: str,
        ring_timeout_s: int,
    ) -> Dialled: ...


class GrpcCallControl:
    """``CallControl`` over gRPC; the attempt id is the request id (the gateway answers a
    repeated one with its first answer, so a resend never dials twice)."""

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

    async def originate(
        self,
        tenant: str,
        *,
        attempt_id: str,
        campaign_id: str,
        contact_id: str,
        number: str,
        ring_timeout_s: int,
    ) -> Dialled:
        request = pb.OriginateRequest(
            request_id=attempt_id,
            campaign_id=campaign_id,
            contact_id=contact_id,
            attempt_id=attempt_id,
            number=number,
            requested_by=pb.REQUESTER_DIALER,
            requester="dialer",
        )
        request.ring_timeout.FromTimedelta(timedelta(seconds=ring_timeout_s))
        try:
            response = await self._call_control().Originate(
                request, metadata=((TENANT_METADATA_KEY, tenant),), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            detail = f"{exc.code().name}: {exc.details()}"
            if exc.code() in _TRANSIENT:
                return Dialled(unreached=True, detail=detail)
            return Dialled(refused=True, detail=detail)
        return Dialled(call_id=str(response.call_id) or None)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
