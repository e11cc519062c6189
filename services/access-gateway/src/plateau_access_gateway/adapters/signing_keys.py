"""Where the gateway's export-signing key comes from: a setting, or a file made once.

In production the key is a Secret handed over in a setting (PEM, or base64 of the 32 raw
bytes); the embedded default generates one at first start into the platform's home, readable
by its owner only, so every later start signs with the same key.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from plateau_access_gateway.domain.signing import ExportSigner
from plateau_runtime.errors import ConfigurationError

#: The file name of the embedded default's key, in the platform's home.
KEY_FILE = "export-signing-key.pem"


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """A private key given as PEM (PKCS#8) or as base64 of its 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_private_key(text.encode(), password=None)
    else:
        try:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
        except ValueError:
            key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(
            "the export signing key is not an Ed25519 private key",
            "give a PKCS#8 PEM or the base64 of 32 raw bytes",
        )
    return key


def load_or_create(path: Path) -> ExportSigner:
    """The signer whose key is in ``path``, generating the key there (mode 0600) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        # O_EXCL: two processes starting together keep the first key, never overwrite it.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
    return ExportSigner(private_key_from_text(path.read_text()))


def signer_from_setting(value: str | None, home: Path) -> ExportSigner:
    """The production key when the setting is given, else the home's (made once)."""
    if value:
        return ExportSigner(private_key_from_text(value))
    return load_or_create(home / KEY_FILE)
