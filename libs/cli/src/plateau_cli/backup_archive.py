"""The backup archive format: an authenticated, encrypted stream of members and a manifest.

Layout of a file (format version 1)::

    header   MAGIC (15 bytes) | version (u16) | parameters length (u32) | parameters (JSON)
             | key check (32) | header digest (32)
    chunks   ( ciphertext length (u32) | AES-256-GCM ciphertext with its 16-byte tag )*

The parameters say how the key was obtained (``key-file``, or ``scrypt`` with its cost and
a random salt) and carry a random nonce prefix. The payload key is derived from the key
material with HKDF-SHA256 and the archive's own salt, so each archive has a key of its own.
Each chunk's nonce is ``prefix (7) | chunk counter (u32) | last flag (1)`` (the STREAM
construction): a chunk moved, dropped or replayed fails to authenticate, and a file cut
after any chunk lacks the last flag, so truncation is detected. The whole header is the
associated data of every chunk. The key check (an HMAC of the header under a second key
derived from the same material) tells a wrong key from damage before any chunk is read;
the header digest (plain SHA-256) tells a damaged header from a wrong key.

Decrypted, the chunks form a sequence of records ``kind (1) | length (u32) | payload``:
``B`` opens a member (JSON: its name and description), ``D`` carries its bytes, ``E``
closes it (JSON: size and SHA-256), and a final ``M`` holds the manifest (JSON), which
repeats every member's size and digest. Memory stays bounded by the chunk size whatever the
size of the archive.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from plateau_runtime.errors import PlateauError

MAGIC = b"plateau-backup\n"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20
KEY_BYTES = 32
SALT_BYTES = 32
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
#: scrypt cost for passphrases (OWASP's recommendation): 128 MiB of memory per derivation.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
#: The most a header may ask for: a forged header must not make a restore exhaust memory.
SCRYPT_MAX_N = 1 << 20
MAX_PARAMETERS = 4096

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_RECORD = struct.Struct(">cI")

BEGIN, DATA, END, MANIFEST = b"B", b"D", b"E", b"M"


class ArchiveError(PlateauError):
    """The archive cannot be used: wrong key, damaged, truncated, or of another format."""


@dataclass(frozen=True)
class KeyMaterial:
    """What the archive key is derived from: 32 key bytes, or a passphrase (scrypt)."""

    secret: bytes
    kind: str  # "key-file" or "scrypt"

    @classmethod
    def from_key_file(cls, path: Path) -> KeyMaterial:
        """A key file holds 32 bytes: raw, or as 64 hex digits, or as base64 (one line)."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PlateauError(
                f"cannot read the backup key file {path}: {exc.strerror}",
                "give a readable file of 32 random bytes (head -c 32 /dev/urandom > FILE)",
            ) from None
        return cls(_decode_key(raw, str(path)), "key-file")

    @classmethod
    def from_passphrase(cls, passphrase: str) -> KeyMaterial:
        if len(passphrase) < 12:
            raise PlateauError(
                "the backup passphrase (PLATEAU_BACKUP_KEY) is shorter than 12 characters",
                "use a long random passphrase, or a 32-byte key file with --key-file",
            )
        return cls(passphrase.encode(), "scrypt")


def _decode_key(raw: bytes, where: str) -> bytes:
    import base64
    import binascii

    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_BYTES:
        return decoded
    raise PlateauError(
        f"the backup key file {where} does not hold a 32-byte key",
        "it must hold 32 bytes, raw or as 64 hex digits or base64 "
        "(make one with: head -c 32 /dev/urandom > FILE)",
    )


@dataclass(frozen=True)
class _Keys:
    payload: bytes
    check: bytes


def _derive(material: KeyMaterial, parameters: dict[str, Any]) -> _Keys:
    salt = bytes.fromhex(parameters["salt"])
    if parameters["kdf"] == "scrypt":
        n, r, p = (int(parameters[name]) for name in ("n", "r", "p"))
        if not (n <= SCRYPT_MAX_N and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError(f"scrypt cost n={n}, r={r}, p={p} is out of bounds")
        if material.kind != "scrypt":
            raise ArchiveError(
                "this archive was encrypted with a passphrase, and a key file was given",
                "give the passphrase in PLATEAU_BACKUP_KEY instead of --key-file",
            )
        master = Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(material.secret)
    else:
        if material.kind != "key-file":
            raise ArchiveError(
                "this archive was encrypted with a key file, and a passphrase was given",
                "give the key file with --key-file",
            )
        master = material.secret

    def hkdf(info: bytes) -> bytes:
        return HKDF(hashes.SHA256(), KEY_BYTES, salt, info).derive(master)

    return _Keys(hkdf(b"plateau-backup v1 payload"), hkdf(b"plateau-backup v1 key check"))


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + _U32.pack(counter) + (b"\x01" if last else b"\x00")


class ArchiveWriter:
    """Writes an archive: ``begin``/``write``/``end`` per member, then ``finish(manifest)``."""

    def __init__(self, out: IO[bytes], material: KeyMaterial) -> None:
        self._out = out
        salt = os.urandom(SALT_BYTES)
        self._prefix = os.urandom(NONCE_PREFIX_BYTES)
        parameters: dict[str, Any] = {"kdf": material.kind, "salt": salt.hex()}
        if material.kind == "scrypt":
            parameters |= {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
        parameters["nonce_prefix"] = self._prefix.hex()
        keys = _derive(material, parameters)
        encoded = json.dumps(parameters, sort_keys=True).encode()
        head = MAGIC + _U16.pack(FORMAT_VERSION) + _U32.pack(len(encoded)) + encoded
        head += hmac.new(keys.check, head, hashlib.sha256).digest()
        head += hashlib.sha256(head).digest()
        self._header = head
        self._aead = AESGCM(keys.payload)
        self._buffer = bytearray()
        self._counter = 0
        self._member: str | None = None
        self._digest = hashlib.sha256()
        self._size = 0
        self.members: dict[str, dict[str, Any]] = {}
        out.write(head)

    def _record(self, kind: bytes, payload: bytes) -> None:
        self._buffer += _RECORD.pack(kind, len(payload))
        self._buffer += payload
        while len(self._buffer) > CHUNK_SIZE:
            self._seal(bytes(self._buffer[:CHUNK_SIZE]), last=False)
            del self._buffer[:CHUNK_SIZE]

    def _seal(self, plain: bytes, *, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, last), plain, self._header)
        self._out.write(_U32.pack(len(sealed)) + sealed)
        self._counter += 1

    def begin(self, name: str, **description: Any) -> None:
        if self._member is not None:
            raise RuntimeError(f"member {self._member} is still open")
        if name in self.members:
            raise ValueError(f"member {name} is already in the archive")
        self._member, self._digest, self._size = name, hashlib.sha256(), 0
        self._record(BEGIN, json.dumps({"name": name, **description}, sort_keys=True).encode())

    def write(self, data: bytes) -> None:
        if self._member is None:
            raise RuntimeError("no member is open")
        # Records stay well under the chunk size so a reader never holds more than two chunks.
        for start in range(0, len(data), CHUNK_SIZE // 2):
            piece = data[start : start + CHUNK_SIZE // 2]
            self._digest.update(piece)
            self._size += len(piece)
            self._record(DATA, piece)

    def end(self) -> dict[str, Any]:
        """Close the open member; its size and SHA-256 (also kept in ``members``)."""
        if self._member is None:
            raise RuntimeError("no member is open")
        summary = {"size": self._size, "sha256": self._digest.hexdigest()}
        self._record(END, json.dumps(summary, sort_keys=True).encode())
        self.members[self._member] = summary
        self._member = None
        return summary

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (with every member's size and digest) and the last chunk."""
        if self._member is not None:
            raise RuntimeError(f"member {self._member} is still open")
        body = {**manifest, "format_version": FORMAT_VERSION, "members": self.members}
        self._record(MANIFEST, json.dumps(body, sort_keys=True).encode())
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._out.flush()


@dataclass(frozen=True)
class Record:
    kind: bytes
    payload: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise ArchiveError("a record of the archive is not a JSON object", "it was altered")
        return value


class ArchiveReader:
    """Reads an archive, authenticating every chunk before any of its bytes are used."""

    def __init__(self, source: IO[bytes], material: KeyMaterial, name: str = "the archive") -> None:
        self._in = source
        self._name = name
        self._prefix, self._header, keys = self._read_header(material)
        self._aead = AESGCM(keys.payload)

    def damaged(self, what: str) -> ArchiveError:
        return ArchiveError(
            f"{self._name} is damaged or was altered: {what}",
            "nothing was restored; use another copy of the backup",
        )

    def _exactly(self, size: int, what: str) -> bytes:
        data = self._in.read(size)
        if len(data) != size:
            raise ArchiveError(
                f"{self._name} is truncated (it ends inside {what})",
                "nothing was restored; use a complete copy of the backup",
            )
        return data

    def _read_header(self, material: KeyMaterial) -> tuple[bytes, bytes, _Keys]:
        magic = self._in.read(len(MAGIC))
        if magic != MAGIC:
            raise ArchiveError(
                f"{self._name} is not a Plateau backup archive",
                "give a file written by `plateau backup`",
            )
        raw_version = self._exactly(_U16.size, "its header")
        (version,) = _U16.unpack(raw_version)
        if version != FORMAT_VERSION:
            raise ArchiveError(
                f"{self._name} has archive format version {version}; this Plateau reads "
                f"version {FORMAT_VERSION}",
                "restore it with the Plateau release that wrote it (or a newer one)",
            )
        raw_length = self._exactly(_U32.size, "its header")
        (length,) = _U32.unpack(raw_length)
        if length > MAX_PARAMETERS:
            raise self.damaged("its header is implausibly large")
        encoded = self._exactly(length, "its header")
        check = self._exactly(32, "its header")
        digest = self._exactly(32, "its header")
        head = magic + raw_version + raw_length + encoded
        if not hmac.compare_digest(hashlib.sha256(head + check).digest(), digest):
            raise self.damaged("its header does not match its digest")
        try:
            parameters = json.loads(encoded)
            prefix = bytes.fromhex(parameters["nonce_prefix"])
            keys = _derive(material, parameters)
        except (ValueError, KeyError, TypeError) as exc:
            raise self.damaged(f"its header cannot be read ({exc})") from None
        if not hmac.compare_digest(hmac.new(keys.check, head, hashlib.sha256).digest(), check):
            raise ArchiveError(
                f"wrong key for {self._name}",
                "give the key file (--key-file) or passphrase (PLATEAU_BACKUP_KEY) it was "
                "made with; nothing was restored",
            )
        return prefix, head + check + digest, keys

    def _chunks(self) -> Iterator[bytes]:
        counter = 0
        while True:
            raw_length = self._in.read(_U32.size)
            if not raw_length:
                raise ArchiveError(
                    f"{self._name} is truncated (its last part is missing after part {counter})",
                    "nothing was restored; use a complete copy of the backup",
                )
            if len(raw_length) != _U32.size:
                raise ArchiveError(
                    f"{self._name} is truncated (it ends inside part {counter + 1})",
                    "nothing was restored; use a complete copy of the backup",
                )
            (length,) = _U32.unpack(raw_length)
            if length > CHUNK_SIZE + TAG_BYTES:
                raise self.damaged(f"part {counter + 1} has an impossible length")
            sealed = self._exactly(length, f"part {counter + 1}")
            plain, last = self._open(sealed, counter)
            yield plain
            counter += 1
            if last:
                if self._in.read(1):
                    raise self.damaged("there are bytes after its last part")
                return

    def _open(self, sealed: bytes, counter: int) -> tuple[bytes, bool]:
        for last in (False, True):
            try:
                nonce = _nonce(self._prefix, counter, last)
                return self._aead.decrypt(nonce, sealed, self._header), last
            except InvalidTag:
                continue
        raise self.damaged(f"part {counter + 1} fails authentication")

    def records(self) -> Iterator[Record]:
        """Every record, in order; the last one is the manifest."""
        buffer = bytearray()
        chunks = self._chunks()
        done = False
        while True:
            while len(buffer) < _RECORD.size and not done:
                more = next(chunks, None)
                if more is None:
                    done = True
                else:
                    buffer += more
            if len(buffer) < _RECORD.size:
                if buffer:
                    raise self.damaged("its last record is incomplete")
                raise self.damaged("it has no manifest")
            kind, length = _RECORD.unpack_from(buffer)
            while len(buffer) < _RECORD.size + length and not done:
                more = next(chunks, None)
                if more is None:
                    done = True
                else:
                    buffer += more
            if len(buffer) < _RECORD.size + length:
                raise self.damaged("its last record is incomplete")
            record = Record(kind, bytes(buffer[_RECORD.size : _RECORD.size + length]))
            del buffer[: _RECORD.size + length]
            if kind == MANIFEST:
                # Whatever follows the manifest is refused before the manifest is handed out.
                if buffer or next(chunks, None):
                    raise self.damaged("there are records after the manifest")
                yield record
                return
            yield record


@dataclass(frozen=True)
class Member:
    name: str
    description: dict[str, Any]


def check_archive(source: IO[bytes], material: KeyMaterial, name: str) -> dict[str, Any]:
    """Read the whole archive, authenticating it and checking every member against its digest
    and the manifest; the manifest. Writes nothing."""
    reader = ArchiveReader(source, material, name)
    seen: dict[str, dict[str, Any]] = {}
    current: str | None = None
    digest, size = hashlib.sha256(), 0
    for record in reader.records():
        if record.kind == BEGIN:
            if current is not None:
                raise reader.damaged(f"member {current} is not closed")
            current, digest, size = str(record.json()["name"]), hashlib.sha256(), 0
        elif record.kind == DATA:
            if current is None:
                raise reader.damaged("data outside a member")
            digest.update(record.payload)
            size += len(record.payload)
        elif record.kind == END:
            if current is None:
                raise reader.damaged("a member closed twice")
            summary = {"size": size, "sha256": digest.hexdigest()}
            if record.json() != summary:
                raise reader.damaged(f"member {current} does not match its digest")
            seen[current] = summary
            current = None
        elif record.kind == MANIFEST:
            if current is not None:
                raise reader.damaged(f"member {current} is not closed")
            return _checked_manifest(reader, record, seen)
        else:
            raise reader.damaged(f"unknown record kind {record.kind!r}")
    raise reader.damaged("it has no manifest")


def _checked_manifest(
    reader: ArchiveReader, record: Record, seen: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    manifest = record.json()
    if manifest.get("format_version") != FORMAT_VERSION:
        raise reader.damaged("its manifest names another format version")
    if manifest.get("members") != seen:
        raise reader.damaged("its members do not match the manifest")
    return manifest
