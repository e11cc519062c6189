"""Helpers for tests against a real rtpengine: the daemon as a module fixture, UDP sockets
standing in for phones' RTP endpoints, phones' SDP, and generated tone WAV files.

A test module uses the fixtures by importing them (``from rtp_harness import rtpengine``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import struct
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from plateau_runtime.errors import DependencyUnavailableError
from plateau_sip_gateway.media.embedded import EmbeddedRtpengine, rtpengine_binary

LOOPBACK = "127.0.0.1"
#: A carrier's public address in o= (TEST-NET-2): rtpengine must replace it with its own.
CARRIER_ORIGIN = "198.51.100.7"
WAIT = 3.0


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRtpengine]:
    """rtpengine in user space on free loopback ports, recording to pcap in a tmp dir."""
    missing: DependencyUnavailableError | None = None
    try:
        rtpengine_binary()
    except DependencyUnavailableError as error:
        missing = error
    if missing is not None:  # never a skip: CI and developers must install it
        pytest.fail(f"rtpengine is required for the media tests: {missing}", pytrace=False)
    work = tmp_path_factory.mktemp("rtpengine")
    daemon = EmbeddedRtpengine(work, recording_dir=work / "spool")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@dataclass(frozen=True)
class Rtp:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    source: tuple[str, int]


def rtp_packet(sequence: int, ssrc: int, payload_type: int = 0) -> bytes:
    header = struct.pack("!BBHII", 0x80, payload_type, sequence, sequence * 160, ssrc)
    return header + bytes([sequence % 256]) * 160


class RtpPeer(asyncio.DatagramProtocol):
    """A UDP socket standing in for a phone's RTP endpoint: sends packets, keeps what comes."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[Rtp] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2 and not 72 <= data[1] & 0x7F <= 76:
            _, marker_pt, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
            self.received.put_nowait(Rtp(marker_pt & 0x7F, seq, ts, ssrc, data[12:], addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, packet: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(packet, (LOOPBACK, port))

    async def receive(self, count: int, within: float = WAIT) -> list[Rtp]:
        packets: list[Rtp] = []
        async with asyncio.timeout(within):
            while len(packets) < count:
                packets.append(await self.received.get())
        return packets

    async def drain(self, quiet: float) -> int:
        """Discard what arrives until nothing has come for ``quiet`` seconds; how many."""
        dropped = 0
        while True:
            try:
                await asyncio.wait_for(self.received.get(), quiet)
            except TimeoutError:
                return dropped
            dropped += 1


@pytest.fixture
async def peers() -> AsyncIterator[tuple[RtpPeer, RtpPeer]]:
    """Two RTP endpoints on loopback: (caller or carrier, agent)."""
    loop = asyncio.get_running_loop()
    made = [await loop.create_datagram_endpoint(RtpPeer, local_addr=(LOOPBACK, 0)) for _ in "ab"]
    yield made[0][1], made[1][1]
    for transport, _ in made:
        transport.close()


def phone_sdp(port: int, *, origin: str = LOOPBACK, session: int = 4242, ice: bool = False) -> str:
    """A G.711 SDP as a carrier or softphone sends it (media on loopback, where we listen)."""
    lines = [
        "v=0",
        f"o=- {session} {session} IN IP4 {origin}",
        "s=call",
        f"c=IN IP4 {LOOPBACK}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    if ice:
        lines += [
            "a=ice-ufrag:F7gI",
            "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
            f"a=candidate:1 1 UDP 2130706431 {LOOPBACK} {port} typ host",
        ]
    return "\r\n".join(lines) + "\r\n"


def media_port_of(sdp: str) -> int:
    found = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
    assert found, sdp
    return int(found.group(1))


def write_tone(path: Path, seconds: float, frequency: float = 440.0) -> Path:
    """An 8 kHz mono 16-bit WAV of a sine tone."""
    rate = 8000
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * i / rate)))
        for i in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def nearest_tone(packet: Rtp, tones: tuple[int, ...]) -> int:
    """Which of ``tones`` (Hz) a 20 ms PCMU frame carries: its samples change sign twice per
    period, so a frame of a pure tone of f Hz has f / 25 sign changes."""
    signs = [byte & 0x80 for byte in packet.payload]
    changes = sum(1 for a, b in itertools.pairwise(signs) if a != b)
    return min(tones, key=lambda hz: abs(hz / 25 - changes))
