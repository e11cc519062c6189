"""The backup archive format: what is written reads back, and every kind of damage, a wrong
key or another format version is refused with its own message before any member is used."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest

from plateau_cli.backup_archive import (
    CHUNK_SIZE,
    DATA,
    MAGIC,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    KeyMaterial,
    check_archive,
)
from plateau_runtime.errors import PlateauError

pytestmark = pytest.mark.unit

KEY = KeyMaterial(bytes(range(32)), "key-file")
BIG = os.urandom(CHUNK_SIZE * 2 + 12345)  # spans several chunks


def _archive(material: KeyMaterial = KEY) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, material)
    writer.begin("stores/acd/events", kind="table")
    writer.write(b"first part ")
    writer.write(b"second part")
    writer.end()
    writer.begin("home/tls/key.pem", kind="file", mode=0o600)
    writer.write(BIG)
    writer.end()
    writer.finish({"plateau_version": "test", "stores": {"acd": {"events": 2}}})
    return out.getvalue()


def _check(data: bytes, material: KeyMaterial = KEY) -> dict[str, object]:
    return check_archive(io.BytesIO(data), material, "backup.plateau-backup")


def test_members_and_manifest_read_back_exactly() -> None:
    data = _archive()
    manifest = _check(data)
    assert manifest["plateau_version"] == "test"
    assert manifest["format_version"] == 1
    members = manifest["members"]
    assert isinstance(members, dict)
    assert members["stores/acd/events"]["size"] == len(b"first part second part")
    assert members["home/tls/key.pem"]["size"] == len(BIG)
    chunks: dict[str, bytes] = {}
    current = ""
    for record in ArchiveReader(io.BytesIO(data), KEY).records():
        if record.kind == b"B":
            current = str(record.json()["name"])
            chunks[current] = b""
        elif record.kind == DATA:
            chunks[current] += record.payload
    assert chunks == {"stores/acd/events": b"first part second part", "home/tls/key.pem": BIG}


def test_the_archive_does_not_contain_the_plaintext() -> None:
    data = _archive()
    assert b"first part" not in data
    assert BIG[:64] not in data


def test_a_passphrase_archive_needs_the_passphrase() -> None:
    material = KeyMaterial.from_passphrase("correct horse battery staple")
    data = _archive(material)
    assert _check(data, material)["plateau_version"] == "test"
    with pytest.raises(ArchiveError, match="wrong key"):
        _check(data, KeyMaterial.from_passphrase("correct horse battery stapler"))
    with pytest.raises(ArchiveError, match="encrypted with a passphrase"):
        _check(data, KEY)


def test_a_wrong_key_is_named_as_such() -> None:
    with pytest.raises(ArchiveError, match="wrong key"):
        _check(_archive(), KeyMaterial(bytes(32), "key-file"))


@pytest.mark.parametrize("offset", [len(MAGIC) + 10, 200, 5000, CHUNK_SIZE + 100, -20])
def test_one_flipped_byte_anywhere_is_refused(offset: int) -> None:
    data = bytearray(_archive())
    data[offset] ^= 0x01
    with pytest.raises(ArchiveError, match="damaged or was altered"):
        _check(bytes(data))


@pytest.mark.parametrize("keep", [len(MAGIC) + 3, 300, CHUNK_SIZE, CHUNK_SIZE + 1000, -1])
def test_a_truncated_archive_is_refused(keep: int) -> None:
    data = _archive()
    with pytest.raises(ArchiveError, match=r"truncated|damaged"):
        _check(data[:keep])


def test_cut_exactly_after_a_chunk_is_still_truncated() -> None:
    data = _archive()
    (header_json,) = struct.unpack(">I", data[len(MAGIC) + 2 : len(MAGIC) + 6])
    first = len(MAGIC) + 6 + header_json + 64
    (length,) = struct.unpack(">I", data[first : first + 4])
    with pytest.raises(ArchiveError, match="truncated"):
        _check(data[: first + 4 + length])


def test_bytes_appended_after_the_last_chunk_are_refused() -> None:
    with pytest.raises(ArchiveError, match="after its last part"):
        _check(_archive() + b"x")


def test_another_format_version_is_named() -> None:
    data = bytearray(_archive())
    data[len(MAGIC) : len(MAGIC) + 2] = struct.pack(">H", 2)
    with pytest.raises(ArchiveError, match="format version 2"):
        _check(bytes(data))


def test_a_file_that_is_not_an_archive_is_named() -> None:
    with pytest.raises(ArchiveError, match="not a Plateau backup archive"):
        _check(b"PK\x03\x04 a zip file")


def test_key_files_hold_32_bytes_raw_hex_or_base64(tmp_path: Path) -> None:
    raw = os.urandom(32)
    for name, content in (
        ("raw", raw),
        ("hex", raw.hex().encode() + b"\n"),
        ("b64", __import__("base64").b64encode(raw) + b"\n"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        assert KeyMaterial.from_key_file(path).secret == raw
    short = tmp_path / "short"
    short.write_bytes(b"too short")
    with pytest.raises(PlateauError, match="does not hold a 32-byte key"):
        KeyMaterial.from_key_file(short)
    with pytest.raises(PlateauError, match="shorter than 12"):
        KeyMaterial.from_passphrase("short")


def test_a_forged_header_cannot_ask_for_an_exhausting_scrypt_cost() -> None:
    import hashlib
    import json

    material = KeyMaterial.from_passphrase("correct horse battery staple")
    data = _archive(material)
    start = len(MAGIC) + 2
    (length,) = struct.unpack(">I", data[start : start + 4])
    parameters = json.loads(data[start + 4 : start + 4 + length])
    check = data[start + 4 + length : start + 4 + length + 32]
    rest = data[start + 4 + length + 64 :]
    parameters["n"] = 1 << 30
    encoded = json.dumps(parameters).encode()
    head = MAGIC + data[len(MAGIC) : start] + struct.pack(">I", len(encoded)) + encoded
    forged = head + check + hashlib.sha256(head + check).digest() + rest
    with pytest.raises(ArchiveError, match="out of bounds"):
        _check(forged, material)
