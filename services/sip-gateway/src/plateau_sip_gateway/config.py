"""The gateway's configuration files: trunks and extensions, with the embedded demo's defaults.

Demo defaults (no file configured): one trunk ``demo`` accepting calls from 127.0.0.1 for
+242053000100 (dialled as ``053000100`` or in E.164), 45 calls (4 Mbit/s of G.711); and
extensions 1001-1010 whose passwords are generated at first start into
``<PLATEAU_HOME>/sip-extensions.json`` (mode 0600) and read from there afterwards, so no
password is ever committed.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from plateau_runtime.errors import ConfigurationError
from plateau_sip_gateway.domain.digest import Algorithm, derive_credentials
from plateau_sip_gateway.domain.directory import InMemoryDirectory
from plateau_sip_gateway.domain.trunks import TrunksConfig

DEMO_TENANT = "demo"
DEMO_DNIS = "+242053000100"
DEMO_EXTENSIONS = tuple(str(n) for n in range(1001, 1011))
EXTENSIONS_FILE_NAME = "sip-extensions.json"


def demo_trunks(tenant: str = DEMO_TENANT) -> TrunksConfig:
    """The embedded default's trunk: ``sipp`` on the same machine plays the carrier."""
    return TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "demo",
                    "tenant": tenant,
                    "source_networks": ["127.0.0.1/32"],
                    "outbound": [{"host": "127.0.0.1", "port": 5070}],
                    "entry_points": {DEMO_DNIS: "sales"},
                    "capacity": {"kind": "bandwidth", "bandwidth_kbps": 4000},
                    "options_interval_s": 0,
                }
            ]
        }
    )


def load_trunks(path: Path | None, tenant: str = DEMO_TENANT) -> TrunksConfig:
    """The trunks of ``path`` (JSON), or the demo trunk when no file is configured."""
    if path is None:
        return demo_trunks(tenant)
    try:
        return TrunksConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the trunks file {path}: {exc.strerror}",
            "check PLATEAU_SIP_TRUNKS_FILE",
        ) from None
    except ValueError as exc:
        raise ConfigurationError(
            f"the trunks file {path} is invalid: {exc}", "fix the file and start again"
        ) from None


def load_passwords(path: Path | None, home: Path) -> dict[str, str]:
    """``{extension: password}`` from ``path``; without one, the demo's generated file."""
    if path is None:
        path = home / EXTENSIONS_FILE_NAME
        if not path.exists():
            generate_passwords(path, DEMO_EXTENSIONS)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the extensions file {path}: {exc}",
            'it must be a JSON object {"1001": "password", ...}: see PLATEAU_SIP_EXTENSIONS_FILE',
        ) from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()
    ):
        raise ConfigurationError(
            f"the extensions file {path} is not an object of extension -> password",
            'write it as {"1001": "password", ...}',
        )
    return dict(raw)


def generate_passwords(path: Path, extensions: Sequence[str]) -> None:
    """Write random passwords for ``extensions`` to ``path``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    passwords = {ext: secrets.token_urlsafe(12) for ext in extensions}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(passwords, out, indent=2)


def directory_for(
    passwords: Mapping[str, str], realm: str, algorithms: Sequence[Algorithm]
) -> InMemoryDirectory:
    """The credential directory (HA1s only; the passwords are not kept)."""
    return InMemoryDirectory(
        derive_credentials(ext, realm, password, algorithms) for ext, password in passwords.items()
    )
