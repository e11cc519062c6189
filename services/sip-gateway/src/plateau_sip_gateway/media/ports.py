"""The media port: what the B2BUA asks of whatever carries a call's audio.

A call is addressed the way SIP addresses it — its Call-ID and the tags of its two legs —
so the B2BUA passes what it already has. The offerer is the leg whose ``From`` tag sent
the SDP offer; the answerer is the leg with the ``To`` tag.

Two adapters implement it: :class:`~plateau_sip_gateway.media.rtpengine.RtpengineMedia`
anchors the media in rtpengine (so the gateway can play a greeting, queue music or the
outbound compliance message, and record), and
:class:`~plateau_sip_gateway.media.signalling_only.SignallingOnlyMedia` passes SDP through
untouched and refuses everything that needs audio with :class:`MediaUnavailableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

#: rtpengine 10.5 cannot loop a file endlessly; queue music repeats this many times (hours of
#: audio for any real file) and the B2BUA stops it with ``stop_playing`` when an agent answers.
MUSIC_REPEAT = 1000


class MediaError(Exception):
    """A media operation failed; ``str(error)`` says what and what to do."""


class MediaUnavailableError(MediaError):
    """The operation needs anchored media, and this gateway runs signalling-only."""


@dataclass(frozen=True, slots=True)
class Playback:
    """A playback that started: ``duration`` is the length of one pass, when it is known.

    The compliance message uses it: wait ``duration`` after ``play`` returns, then hang up.
    """

    duration: timedelta | None


@runtime_checkable
class MediaPort(Protocol):
    """Anchors a call's media, plays audio to a leg and records it (or says it cannot)."""

    @property
    def available(self) -> bool:
        """Whether audio is anchored (play and record work), or SDP only passes through."""
        ...

    @property
    def description(self) -> str:
        """One line for the start-up log: which media mode and where."""
        ...

    async def anchor_offer(self, call_id: str, from_tag: str, sdp: str) -> str:
        """The SDP offer to forward to the answerer in place of ``sdp``, the offerer's one."""
        ...

    async def anchor_answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str) -> str:
        """The SDP answer to return to the offerer in place of ``sdp``, the answerer's one."""
        ...

    async def release(self, call_id: str) -> None:
        """Free everything held for the call (ports, players, recording); idempotent."""
        ...

    async def play(self, call_id: str, tag: str, media: Path, *, repeat: int = 1) -> Playback:
        """Play the audio file ``media`` ``repeat`` times to the leg with ``tag``."""
        ...

    async def stop_playing(self, call_id: str, tag: str) -> None:
        """Stop what plays to the leg with ``tag`` (queue music when an agent answers)."""
        ...

    async def block_media(self, call_id: str, tag: str) -> None:
        """Drop the audio the leg with ``tag`` sends (a queued caller talks to nobody)."""
        ...

    async def unblock_media(self, call_id: str, tag: str) -> None:
        """Relay the audio the leg with ``tag`` sends again (an agent is there now)."""
        ...

    async def start_recording(self, call_id: str, *, metadata: str | None = None) -> None:
        """Record both legs of the call; ``metadata`` (e.g. the queue) is kept with it."""
        ...

    async def stop_recording(self, call_id: str) -> None:
        """Stop recording the call (the legs keep talking)."""
        ...

    async def close(self) -> None:
        """Let go of the control connection (at gateway shutdown)."""
        ...


def placeholder_sdp(address: str, *, session_id: int = 1, port: int = 9) -> str:
    """An SDP offer for a leg with no media endpoint of its own: the gateway itself.

    The gateway uses it when it talks to one leg alone: answering a queued caller to play a
    greeting and music, or placing an outbound call that may end with the compliance
    message. It offers G.711 (PCMU, PCMA) and telephone-events, ``sendonly`` so the far
    end sends nothing back to an address nobody listens on (port 9 is "discard");
    rtpengine replaces the address and port with its own before the far end sees it.
    """
    return (
        "v=0\r\n"
        f"o=plateau {session_id} 1 IN IP4 {address}\r\n"
        "s=plateau\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        "a=sendonly\r\n"
    )
