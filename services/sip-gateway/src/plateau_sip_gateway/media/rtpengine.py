"""rtpengine over its ``ng`` control protocol (bencode over UDP), and the media port on it.

Each request is ``<cookie> <bencoded dictionary>``; the reply carries the same cookie, which
is how replies find their request and how rtpengine recognises a retransmission (it answers
a repeated cookie from its cache instead of executing the command twice). A request that
gets no reply in ``timeout`` is sent again, with the same cookie, up to ``retries`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from plateau_sip_gateway.media.bencode import Bencodable, BencodeError, BValue, decode_dict, encode
from plateau_sip_gateway.media.ports import MediaError, Playback

#: rtpengine's refusal of ``stop media`` for a leg nothing was ever played to.
NOT_PLAYING = "Not currently playing media"

#: The largest reply we accept; an SDP with a few media sections is well under it.
MAX_DATAGRAM = 65_535


class RtpengineError(MediaError):
    """rtpengine answered ``result: error``; ``reason`` is its ``error-reason``."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine refused {command!r}: {reason}")
        self.command = command
        self.reason = reason


class RtpengineTimeoutError(MediaError):
    """rtpengine did not answer a request, even after the retransmissions."""

    def __init__(self, command: str, address: tuple[str, int], attempts: int, wait: float) -> None:
        host, port = address
        super().__init__(
            f"rtpengine at {host}:{port} did not answer {command!r} after {attempts} attempts "
            f"({wait:.1f} s each) — check that it runs and listens there "
            f"(its --listen-ng option)"
        )
        self.command = command
        self.address = address


class RtpengineProtocolError(MediaError):
    """rtpengine's reply was not a valid ng message."""


@dataclass(frozen=True, slots=True)
class AnchorOptions:
    """How rtpengine rewrites SDP when it anchors a leg (the ng ``offer``/``answer`` keys).

    The defaults suit a SIP trunk and desk softphones: plain RTP/AVP, no ICE (rtpengine is
    the only path), the ``o=`` and session ``c=`` lines rewritten to rtpengine's address.
    ``port-latching`` keeps rtpengine's ports when a leg's SDP changes: without it, a second
    answer for the same leg (the agent taking over from the gateway's stand-in that played
    queue music) moves the port the caller was told in its 183, and the caller, who keeps
    the first answer (RFC 3261 §13.2.1), would send to a port nobody reads.
    """

    ice: str = "remove"
    transport_protocol: str = "RTP/AVP"
    replace: tuple[str, ...] = ("origin", "session-connection")
    flags: tuple[str, ...] = ("trust-address", "port-latching")
    record_call: bool = False
    metadata: str | None = None

    def as_params(self) -> dict[str, Bencodable]:
        params: dict[str, Bencodable] = {
            "ICE": self.ice,
            "transport-protocol": self.transport_protocol,
            "replace": list(self.replace),
            "flags": list(self.flags),
        }
        if self.record_call:
            params["record-call"] = "yes"
        if self.metadata is not None:
            params["metadata"] = self.metadata
        return params


@dataclass(frozen=True, slots=True)
class SdpResult:
    """The SDP rtpengine rewrote, with its warning when it had one."""

    sdp: str
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What ``query`` (and ``delete``) report about a call: when, and the legs' tags."""

    created: int | None
    last_signal: int | None
    tags: tuple[str, ...]
    raw: Mapping[str, BValue] = field(repr=False)


@dataclass(frozen=True, slots=True)
class PlayResult:
    """A playback that started; ``duration_ms`` is one pass, when rtpengine could tell."""

    duration_ms: int | None


class _NgDatagrams(asyncio.DatagramProtocol):
    """Hands each reply datagram to the waiting request with the same cookie."""

    def __init__(self) -> None:
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        cookie, _, body = data.partition(b" ")
        waiter = self.pending.get(cookie)
        if waiter is not None and not waiter.done():
            waiter.set_result(body)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port-unreachable lands here on Linux; the request's timeout reports it.
        return None


class RtpengineClient:
    """An asyncio client of rtpengine's ng protocol over UDP.

    Use it as an async context manager (or ``connect``/``close``). Every command is a
    method returning a typed result; :meth:`request` sends any other command raw.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout: float = 1.0,
        retries: int = 2,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _NgDatagrams | None = None
        self._prefix = f"{os.getpid()}{secrets.token_hex(4)}"
        self._serial = itertools.count(1)

    async def connect(self) -> None:
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _NgDatagrams, remote_addr=self.address
        )
        self._transport, self._protocol = transport, protocol

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = self._protocol = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(self, command: str, **params: Bencodable) -> dict[str, BValue]:
        """Send ``command`` with ``params`` (underscores in names become hyphens).

        Returns the reply dictionary (keys as ``str``); raises :class:`RtpengineError` on
        ``result: error`` and :class:`RtpengineTimeoutError` when no reply comes.
        """
        await self.connect()
        assert self._transport is not None and self._protocol is not None
        message: dict[str, Bencodable] = {"command": command}
        message.update({name.replace("_", "-"): value for name, value in params.items()})
        cookie = f"{self._prefix}_{next(self._serial)}".encode()
        datagram = cookie + b" " + encode(message)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._protocol.pending[cookie] = waiter
        try:
            attempts = 1 + self.retries
            for _ in range(attempts):
                self._transport.sendto(datagram)
                with contextlib.suppress(TimeoutError):
                    body = await asyncio.wait_for(asyncio.shield(waiter), self.timeout)
                    break
            else:
                raise RtpengineTimeoutError(command, self.address, attempts, self.timeout)
        finally:
            self._protocol.pending.pop(cookie, None)
            waiter.cancel()
        return _check_reply(command, body)

    async def ping(self) -> None:
        reply = await self.request("ping")
        if reply.get("result") != b"pong":
            raise RtpengineProtocolError(f"rtpengine answered ping with {reply!r}, not pong")

    async def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: str,
        options: AnchorOptions | None = None,
        **extra: Bencodable,
    ) -> SdpResult:
        """Anchor the offerer's SDP; returns the SDP to send to the answerer."""
        params = (options or AnchorOptions()).as_params()
        reply = await self.request(
            "offer", call_id=call_id, from_tag=from_tag, sdp=sdp, **params, **extra
        )
        return _sdp_result("offer", reply)

    async def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: str,
        options: AnchorOptions | None = None,
        **extra: Bencodable,
    ) -> SdpResult:
        """Anchor the answerer's SDP; returns the SDP to send back to the offerer."""
        params = (options or AnchorOptions()).as_params()
        reply = await self.request(
            "answer",
            call_id=call_id,
            from_tag=from_tag,
            to_tag=to_tag,
            sdp=sdp,
            **params,
            **extra,
        )
        return _sdp_result("answer", reply)

    async def delete(
        self,
        call_id: str,
        from_tag: str | None = None,
        to_tag: str | None = None,
        *,
        fatal: bool = True,
        delete_delay: int | None = 0,
    ) -> CallInfo:
        """End the call (or one branch); ``fatal`` makes an unknown call an error, not a
        warning. ``delete_delay=0`` frees ports at once instead of after the daemon's delay."""
        params: dict[str, Bencodable] = {"call-id": call_id}
        if from_tag is not None:
            params["from-tag"] = from_tag
        if to_tag is not None:
            params["to-tag"] = to_tag
        if fatal:
            params["flags"] = ["fatal"]
        if delete_delay is not None:
            params["delete delay"] = delete_delay
        return _call_info(await self.request("delete", **params))

    async def query(self, call_id: str) -> CallInfo:
        return _call_info(await self.request("query", call_id=call_id))

    async def play_media(
        self, call_id: str, from_tag: str, file: Path | str, *, repeat_times: int = 1
    ) -> PlayResult:
        """Play ``file`` (any format ffmpeg reads, resampled by rtpengine) to one leg.

        ``file`` is opened by the daemon, so it must be an absolute path it can read.
        """
        if repeat_times < 1:
            raise ValueError(f"repeat_times must be at least 1, not {repeat_times}")
        reply = await self.request(
            "play media",
            call_id=call_id,
            from_tag=from_tag,
            file=str(file),
            repeat_times=repeat_times,
        )
        duration = reply.get("duration")
        return PlayResult(duration if isinstance(duration, int) else None)

    async def stop_media(self, call_id: str, from_tag: str) -> None:
        await self.request("stop media", call_id=call_id, from_tag=from_tag)

    async def block_media(self, call_id: str, from_tag: str) -> None:
        """Drop the RTP the leg ``from_tag`` sends; what is played to it still reaches it."""
        await self.request("block media", call_id=call_id, from_tag=from_tag)

    async def unblock_media(self, call_id: str, from_tag: str) -> None:
        await self.request("unblock media", call_id=call_id, from_tag=from_tag)

    async def start_recording(self, call_id: str, *, metadata: str | None = None) -> None:
        """Record the whole call into the daemon's ``--recording-dir``."""
        params: dict[str, Bencodable] = {"call-id": call_id}
        if metadata is not None:
            params["metadata"] = metadata
        await self.request("start recording", **params)

    async def stop_recording(self, call_id: str) -> None:
        await self.request("stop recording", call_id=call_id)


def _text(value: BValue | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None


def _check_reply(command: str, body: bytes) -> dict[str, BValue]:
    try:
        raw = decode_dict(body)
    except BencodeError as error:
        raise RtpengineProtocolError(
            f"rtpengine's reply to {command!r} is not a bencoded dictionary: {error}"
        ) from error
    reply = {key.decode(errors="replace"): value for key, value in raw.items()}
    result = reply.get("result")
    if result == b"error":
        reason = _text(reply.get("error-reason")) or "no reason given"
        raise RtpengineError(command, reason)
    if result not in (b"ok", b"pong"):
        raise RtpengineProtocolError(
            f"rtpengine's reply to {command!r} has result {result!r}, not ok/pong/error"
        )
    return reply


def _sdp_result(command: str, reply: Mapping[str, BValue]) -> SdpResult:
    sdp = _text(reply.get("sdp"))
    if sdp is None:
        raise RtpengineProtocolError(f"rtpengine's reply to {command!r} carries no SDP")
    return SdpResult(sdp, _text(reply.get("warning")))


def _call_info(reply: Mapping[str, BValue]) -> CallInfo:
    created, last_signal = reply.get("created"), reply.get("last signal")
    tags = reply.get("tags")
    names = (
        tuple(sorted(k.decode(errors="replace") for k in tags)) if isinstance(tags, dict) else ()
    )
    return CallInfo(
        created if isinstance(created, int) else None,
        last_signal if isinstance(last_signal, int) else None,
        names,
        dict(reply),
    )


class RtpengineMedia:
    """The media port on rtpengine: anchored audio, playback to a leg, call recording."""

    def __init__(self, client: RtpengineClient, options: AnchorOptions | None = None) -> None:
        self.client = client
        self.options = options or AnchorOptions()

    @property
    def available(self) -> bool:
        return True

    @property
    def description(self) -> str:
        host, port = self.client.address
        return f"media: anchored in rtpengine at {host}:{port} (greeting, music, recording)"

    async def anchor_offer(self, call_id: str, from_tag: str, sdp: str) -> str:
        return (await self.client.offer(call_id, from_tag, sdp, self.options)).sdp

    async def anchor_answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str) -> str:
        return (await self.client.answer(call_id, from_tag, to_tag, sdp, self.options)).sdp

    async def release(self, call_id: str) -> None:
        await self.client.delete(call_id, fatal=False)

    async def play(self, call_id: str, tag: str, media: Path, *, repeat: int = 1) -> Playback:
        if not media.is_absolute():
            # The daemon opens the file from its own working directory.
            raise ValueError(f"media file {media} must be an absolute path")
        result = await self.client.play_media(call_id, tag, media, repeat_times=repeat)
        duration = (
            timedelta(milliseconds=result.duration_ms) if result.duration_ms is not None else None
        )
        return Playback(duration)

    async def stop_playing(self, call_id: str, tag: str) -> None:
        try:
            await self.client.stop_media(call_id, tag)
        except RtpengineError as error:
            # Said when nothing was ever played to the leg: it is silent, as asked.
            if error.reason != NOT_PLAYING:
                raise

    async def block_media(self, call_id: str, tag: str) -> None:
        await self.client.block_media(call_id, tag)

    async def unblock_media(self, call_id: str, tag: str) -> None:
        await self.client.unblock_media(call_id, tag)

    async def start_recording(self, call_id: str, *, metadata: str | None = None) -> None:
        await self.client.start_recording(call_id, metadata=metadata)

    async def stop_recording(self, call_id: str) -> None:
        await self.client.stop_recording(call_id)

    async def close(self) -> None:
        await self.client.close()
