"""gRPC client of the other gateway replicas' ``CallControl``: where a request for a call
held elsewhere is forwarded (one channel per peer address, kept open)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from plateau_runtime.grpc_server import insecure_channel

SERVICE_NAME = "plateau.calls.v1.CallControl"


class ReplicaClient:
    """Calls a method of another replica's ``CallControl`` with the caller's metadata."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def call(
        self,
        address: str,
        method: str,
        *,
        request: Any,
        response_type: Any,
        metadata: Sequence[tuple[str, str]],
        timeout: float,
    ) -> Any:
        """The peer's answer to ``method`` (``grpc.aio.AioRpcError`` as it failed)."""
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = insecure_channel(address)
        rpc = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await rpc(request, metadata=tuple(metadata), timeout=timeout)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
