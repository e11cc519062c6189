"""The per-entry-point media configuration and the gateway's stand-in SDP answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plateau_runtime.errors import ConfigurationError
from plateau_sip_gateway.config import MediaConfig, QueueMedia, load_media
from plateau_sip_gateway.media.calls import stand_in_answer
from plateau_sip_gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

OFFER = (
    "v=0\r\n"
    "o=- 42 42 IN IP4 198.51.100.7\r\n"
    "s=call\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 4000 RTP/AVP 8 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:30\r\n"
    "a=sendrecv\r\n"
    "a=ice-ufrag:F7gI\r\n"
    "m=video 4002 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
)


def test_without_a_file_nothing_is_played_or_recorded() -> None:
    config = load_media(None)
    assert config == MediaConfig()
    queue = config.for_entry_point("sales")
    assert not queue.plays and not queue.record
    assert config.for_entry_point(None) == QueueMedia()


def test_relative_files_are_read_from_the_media_files_directory(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    for name in ("hello.wav", "music.wav", "notice.wav"):
        (tmp_path / "prompts" / name).write_bytes(b"RIFF")
    path = tmp_path / "media.json"
    path.write_text(
        json.dumps(
            {
                "queues": {
                    "sales": {"greeting": "prompts/hello.wav", "music": "prompts/music.wav"},
                    "support": {"record": True},
                },
                "compliance_message": str(tmp_path / "prompts" / "notice.wav"),
            }
        )
    )
    config = load_media(path)
    sales = config.for_entry_point("sales")
    assert sales.greeting == (tmp_path / "prompts" / "hello.wav").resolve()
    assert sales.music is not None and sales.music.is_absolute()
    assert sales.plays and not sales.record
    assert config.for_entry_point("support") == QueueMedia(record=True)
    assert config.compliance_message == (tmp_path / "prompts" / "notice.wav").resolve()


def test_a_missing_audio_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "media.json"
    path.write_text(json.dumps({"queues": {"sales": {"greeting": "nowhere.wav"}}}))
    with pytest.raises(ConfigurationError, match=r"do not exist: .*nowhere\.wav"):
        load_media(path)


@pytest.mark.parametrize(
    "content",
    ['{"queues": {"sales": {"gretting": "a.wav"}}}', "{not json", '{"queues": []}'],
)
def test_an_invalid_file_says_so(tmp_path: Path, content: str) -> None:
    path = tmp_path / "media.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=r"media file .* is invalid"):
        load_media(path)


def test_an_unreadable_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PLATEAU_SIP_MEDIA_FILE"):
        load_media(tmp_path / "absent.json")


def test_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLATEAU_SIP_MEDIA_FILE", str(tmp_path / "media.json"))
    assert GatewaySettings().sip_media_file == tmp_path / "media.json"


def test_stand_in_answers_with_exactly_the_offered_audio_codecs() -> None:
    answer = stand_in_answer(OFFER, "192.0.2.1")
    lines = answer.split("\r\n")
    assert answer.endswith("\r\n")
    assert lines[:5] == [
        "v=0",
        "o=plateau 1 1 IN IP4 192.0.2.1",
        "s=plateau",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
    ]
    audio = lines.index("m=audio 9 RTP/AVP 8 101")
    assert lines[audio + 1 : audio + 6] == [
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:30",
        "a=sendrecv",
    ]
    assert "m=video 0 RTP/AVP 96" in lines, "other streams are rejected, in their place"
    assert "a=rtpmap:96 H264/90000" not in lines
    assert not any(line.startswith("a=ice") for line in lines)


def test_stand_in_refuses_an_offer_without_audio() -> None:
    with pytest.raises(ValueError, match="no audio stream"):
        stand_in_answer(OFFER.replace("m=audio", "m=text"), "192.0.2.1")
