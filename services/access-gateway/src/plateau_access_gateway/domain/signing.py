"""Signed exports: how a CSV or XLSX file carries its provenance and an Ed25519 signature.

Exports stream, so a signature cannot be over the whole file held in memory: each format
defines a *canonical digest* that is computed incrementally while the rows are written, and
the signature is over a short, versioned statement of that digest::

    plateau-export/1 <format> <sha256 of the canonical bytes, hex>

* CSV: the canonical bytes are the file's own bytes before its last line, which is
  ``#signature ed25519 <key id> <base64 signature>``. The line before it,
  ``#provenance <json>``, is part of the signed bytes.
* XLSX: the canonical bytes are one JSON array per row of the ``data`` sheet (cells as they
  read back: text, numbers or null), newline-terminated, then the provenance JSON. The
  ``signature`` sheet holds the provenance, the key id and the signature.

The key id is the first 16 hex digits of the sha256 of the raw 32-byte public key, so a
verifier can tell "wrong key" from "changed content".
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

__all__ = [
    "CSV_PROVENANCE",
    "CSV_SIGNATURE",
    "DATA_SHEET",
    "SIGNATURE_SHEET",
    "Cell",
    "ExportSigner",
    "VerificationError",
    "canonical_provenance",
    "canonical_row",
    "key_id",
    "public_key_from_text",
    "statement",
    "verify_statement",
]

VERSION = "plateau-export/1"
CSV_PROVENANCE = "#provenance "
CSV_SIGNATURE = "#signature ed25519 "
DATA_SHEET = "data"
SIGNATURE_SHEET = "signature"

#: A cell's value in an export, as a spreadsheet reads it back.
Cell = str | int | float | None


class VerificationError(Exception):
    """A file does not verify; the message says what does not match."""


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key (first 16 hex digits of its sha256)."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key given as base64 of its 32 raw bytes, or as a PEM block."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise VerificationError("the PEM public key is not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise VerificationError("the public key is neither base64 nor PEM") from None
    if len(raw) != 32:
        raise VerificationError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def statement(file_format: str, digest_hex: str) -> bytes:
    """The bytes that are signed for a file whose canonical digest is ``digest_hex``."""
    return f"{VERSION} {file_format} {digest_hex}".encode()


def canonical_row(cells: Iterable[Cell]) -> bytes:
    """One XLSX row in the canonical form: as a spreadsheet reads it back (integral floats
    as integers, empty text as an empty cell, trailing empty cells dropped)."""
    values = [
        int(c) if isinstance(c, float) and c.is_integer() else (None if c == "" else c)
        for c in cells
    ]
    while values and values[-1] is None:
        values.pop()
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def canonical_provenance(provenance: Mapping[str, object]) -> str:
    return json.dumps(provenance, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ExportSigner:
    """Signs export statements with the gateway's Ed25519 key."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @property
    def public_key_base64(self) -> str:
        return base64.b64encode(raw_public_key(self.public_key)).decode()

    def sign(self, file_format: str, digest_hex: str) -> str:
        """The base64 signature of a file's canonical digest."""
        return base64.b64encode(self.private_key.sign(statement(file_format, digest_hex))).decode()


def verify_statement(
    key: Ed25519PublicKey, file_format: str, digest_hex: str, signature_b64: str, signed_by: str
) -> None:
    """Raise :class:`VerificationError` unless ``signature_b64`` signs the digest with ``key``."""
    if signed_by != key_id(key):
        raise VerificationError(
            f"the file was signed with key {signed_by}, not with the given key {key_id(key)}"
        )
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        raise VerificationError("the signature is not valid base64") from None
    try:
        key.verify(signature, statement(file_format, digest_hex))
    except InvalidSignature:
        raise VerificationError(
            "the signature does not match the content: the file was changed after it was signed"
        ) from None
