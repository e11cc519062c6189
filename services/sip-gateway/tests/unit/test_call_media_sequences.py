"""Which media commands CallMedia gives for each queue configuration, on a recording fake port.

The real sequences run against rtpengine in ``test_call_media_rtpengine``; this pins the
choices that do not need audio: greeting only, music only, a greeting of unknown length, and
the order of the commands.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from plateau_sip_gateway.config import MediaConfig, QueueMedia
from plateau_sip_gateway.media import MUSIC_REPEAT, MediaPort, Playback
from plateau_sip_gateway.media.calls import AGENT, CUSTOMER, CallMedia

pytestmark = pytest.mark.unit

GREETING, MUSIC = Path("/prompts/greeting.wav"), Path("/prompts/music.wav")
OFFER = "v=0\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"


class RecordingPort:
    """A media port that anchors by tagging SDP and writes down every command it gets."""

    def __init__(self, greeting_length: timedelta | None = timedelta(0)) -> None:
        self.commands: list[tuple[object, ...]] = []
        self.greeting_length = greeting_length
        self.played: asyncio.Queue[str] = asyncio.Queue()  # each file as it starts

    @property
    def available(self) -> bool:
        return True

    @property
    def description(self) -> str:
        return "media: recording fake"

    async def anchor_offer(self, call_id: str, from_tag: str, sdp: str) -> str:
        self.commands.append(("offer", from_tag))
        return f"anchored offer from {from_tag}"

    async def anchor_answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str) -> str:
        self.commands.append(("answer", from_tag, to_tag))
        return f"anchored answer to {from_tag}"

    async def release(self, call_id: str) -> None:
        self.commands.append(("release",))

    async def play(self, call_id: str, tag: str, media: Path, *, repeat: int = 1) -> Playback:
        self.commands.append(("play", tag, media.name, repeat))
        self.played.put_nowait(media.name)
        return Playback(self.greeting_length if media == GREETING else None)

    async def stop_playing(self, call_id: str, tag: str) -> None:
        self.commands.append(("stop", tag))

    async def block_media(self, call_id: str, tag: str) -> None:
        self.commands.append(("block", tag))

    async def unblock_media(self, call_id: str, tag: str) -> None:
        self.commands.append(("unblock", tag))

    async def start_recording(self, call_id: str, *, metadata: str | None = None) -> None:
        self.commands.append(("record", metadata))

    async def stop_recording(self, call_id: str) -> None:
        self.commands.append(("stop recording",))

    async def close(self) -> None:
        return None


def media_with(queue: QueueMedia, port: RecordingPort) -> CallMedia:
    assert isinstance(port, MediaPort)
    return CallMedia(port, MediaConfig(queues={"sales": queue}))


async def until_played(port: RecordingPort, count: int) -> None:
    for _ in range(count):
        await port.played.get()


@pytest.mark.parametrize(
    ("queue", "plays"),
    [
        (QueueMedia(greeting=GREETING), [("play", CUSTOMER, "greeting.wav", 1)]),
        (QueueMedia(music=MUSIC), [("play", CUSTOMER, "music.wav", MUSIC_REPEAT)]),
        (
            QueueMedia(greeting=GREETING, music=MUSIC),
            [
                ("play", CUSTOMER, "greeting.wav", 1),
                ("play", CUSTOMER, "music.wav", MUSIC_REPEAT),
            ],
        ),
    ],
    ids=["greeting-only", "music-only", "greeting-then-music"],
)
async def test_what_a_queued_caller_hears(
    queue: QueueMedia, plays: list[tuple[object, ...]]
) -> None:
    port = RecordingPort()
    media = media_with(queue, port)
    assert await media.hold_in_queue("c1", "sales", OFFER) == f"anchored answer to {CUSTOMER}"
    await until_played(port, len(plays))
    assert port.commands[:3] == [
        ("offer", CUSTOMER),
        ("answer", CUSTOMER, AGENT),
        ("block", CUSTOMER),
    ]
    assert [c for c in port.commands if c[0] == "play"] == plays
    await media.release("c1")


async def test_a_greeting_of_unknown_length_is_followed_by_the_music_at_once() -> None:
    port = RecordingPort(greeting_length=None)
    media = media_with(QueueMedia(greeting=GREETING, music=MUSIC), port)
    await media.hold_in_queue("c1", "sales", OFFER)
    await until_played(port, 2)
    await media.release("c1")


async def test_the_agent_takes_over_in_order_and_the_caller_keeps_its_answer() -> None:
    port = RecordingPort()
    media = media_with(QueueMedia(music=MUSIC, record=True), port)
    early = await media.hold_in_queue("c1", "sales", OFFER)
    await until_played(port, 1)
    port.commands.clear()
    assert await media.offer_to_agent("c1", OFFER) == f"anchored offer from {CUSTOMER}"
    assert await media.agent_answered("c1", "agent sdp") == early
    assert await media.record("c1", "sales") is True
    await media.release("c1")
    assert port.commands == [
        ("stop", CUSTOMER),
        ("answer", CUSTOMER, AGENT),
        ("unblock", CUSTOMER),
        ("record", "entry_point=sales"),
        ("release",),
    ]


async def test_a_call_already_offered_to_an_agent_keeps_ringback() -> None:
    port = RecordingPort()
    media = media_with(QueueMedia(music=MUSIC), port)
    await media.offer_to_agent("c1", OFFER)
    assert await media.hold_in_queue("c1", "sales", OFFER) is None
    assert [c[0] for c in port.commands] == ["offer"]
