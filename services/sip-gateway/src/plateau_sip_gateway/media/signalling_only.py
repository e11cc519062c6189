"""The media port without a media relay: SDP passes through, nothing audio is possible."""

from __future__ import annotations

from pathlib import Path

from plateau_sip_gateway.media.ports import MediaUnavailableError, Playback


class SignallingOnlyMedia:
    """Used when rtpengine is disabled or unreachable: the endpoints exchange RTP directly.

    SDP is returned untouched, ``release`` has nothing to free, and every request that needs
    audio in the gateway's hands (greeting, queue music, compliance message, recording) is
    refused with :class:`MediaUnavailableError` naming why media is unavailable.
    """

    def __init__(self, reason: str = "rtpengine not enabled") -> None:
        self.reason = reason

    @property
    def available(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return (
            "media: signalling only — SDP passed through, "
            f"no greeting/music/recording/compliance message ({self.reason})"
        )

    async def anchor_offer(self, call_id: str, from_tag: str, sdp: str) -> str:
        return sdp

    async def anchor_answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str) -> str:
        return sdp

    async def release(self, call_id: str) -> None:
        return None

    async def play(self, call_id: str, tag: str, media: Path, *, repeat: int = 1) -> Playback:
        raise self._refusal(f"cannot play {media.name}")

    async def stop_playing(self, call_id: str, tag: str) -> None:
        raise self._refusal("cannot stop playback")

    async def block_media(self, call_id: str, tag: str) -> None:
        raise self._refusal("cannot block a leg's audio")

    async def unblock_media(self, call_id: str, tag: str) -> None:
        raise self._refusal("cannot unblock a leg's audio")

    async def start_recording(self, call_id: str, *, metadata: str | None = None) -> None:
        raise self._refusal("cannot record")

    async def stop_recording(self, call_id: str) -> None:
        raise self._refusal("cannot stop recording")

    async def close(self) -> None:
        return None

    def _refusal(self, what: str) -> MediaUnavailableError:
        return MediaUnavailableError(
            f"{what}: the gateway runs signalling-only ({self.reason}) — install the Debian "
            "package rtpengine-daemon, run it with --listen-ng, and enable media in the "
            "gateway's settings"
        )
