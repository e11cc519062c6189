"""The gateway's media: anchored in rtpengine when enabled and reachable, else signalling-only.

The gateway calls :func:`media_from_settings` once at start and logs its ``description``.
"""

from __future__ import annotations

import structlog

from plateau_sip_gateway.media.ports import (
    MUSIC_REPEAT,
    MediaError,
    MediaPort,
    MediaUnavailableError,
    Playback,
    placeholder_sdp,
)
from plateau_sip_gateway.media.rtpengine import (
    AnchorOptions,
    RtpengineClient,
    RtpengineError,
    RtpengineMedia,
    RtpengineProtocolError,
    RtpengineTimeoutError,
)
from plateau_sip_gateway.media.signalling_only import SignallingOnlyMedia

__all__ = [
    "MUSIC_REPEAT",
    "AnchorOptions",
    "MediaError",
    "MediaPort",
    "MediaUnavailableError",
    "Playback",
    "RtpengineClient",
    "RtpengineError",
    "RtpengineMedia",
    "RtpengineProtocolError",
    "RtpengineTimeoutError",
    "SignallingOnlyMedia",
    "media_from_settings",
    "parse_ng_address",
    "placeholder_sdp",
]

log = structlog.get_logger(__name__)


def parse_ng_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"127.0.0.1:2223"`` (or a ``(host, port)`` pair) as a ``(host, port)`` pair."""
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"rtpengine ng address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def media_from_settings(
    enabled: bool,
    ng_address: str | tuple[str, int] | None,
    *,
    timeout: float = 1.0,
    retries: int = 2,
) -> MediaPort:
    """The media port to run with: rtpengine when ``enabled`` and it answers a ping.

    Otherwise :class:`SignallingOnlyMedia`, and one log line saying so and why.
    """
    if not enabled or ng_address is None:
        media: MediaPort = SignallingOnlyMedia("rtpengine not enabled")
        log.warning(media.description)
        return media
    address = parse_ng_address(ng_address)
    client = RtpengineClient(address, timeout=timeout, retries=retries)
    try:
        await client.ping()
    except (MediaError, OSError) as error:
        await client.close()
        host, port = address
        media = SignallingOnlyMedia(f"rtpengine not reachable at {host}:{port}: {error}")
        log.warning(media.description)
        return media
    media = RtpengineMedia(client)
    log.info(media.description)
    return media
