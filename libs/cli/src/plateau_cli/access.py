"""The access gateway's part of ``plateau up`` and the ``plateau users`` commands.

The CLI interprets nothing: the account rules and the certificate are the access
gateway's code (``plateau_access_gateway.users``, ``...adapters.tls``), run with the
gateway's own database role.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from plateau_runtime.services import service

ACCESS = service("access-gateway")
CREDENTIALS_FILE = "access-users.json"


@dataclass(frozen=True)
class AccessDemo:
    """What ``plateau up`` prepared for the access gateway."""

    url: str
    credentials: Path
    lines: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def how_to_log_in(self) -> str:
        return (
            f"access gateway: {self.url} (self-signed certificate) — demo logins and their "
            f"passwords are in {self.credentials} (readable by you only); client users enrol "
            "a TOTP authenticator at their first login"
        )


def prepare_access(database_url: str, home: Path, host: str, port: int) -> AccessDemo:
    """Make the self-signed certificate and the demo users (both once) for the embedded default."""
    tls = importlib.import_module(f"{ACCESS.package}.adapters.tls")
    users = importlib.import_module(f"{ACCESS.package}.users")
    cert, key = home / "tls" / "access-gateway.crt", home / "tls" / "access-gateway.key"
    lines = []
    if tls.ensure_self_signed(cert, key):
        lines.append(f"generated a self-signed certificate {cert}")
    credentials = home / CREDENTIALS_FILE
    demo = users.ensure_demo_users(database_url, credentials)
    lines.append(
        "demo users "
        + ", ".join(f"{u.username} ({u.role.value}, tenant {u.tenant})" for u in demo)
        + f"; passwords in {credentials}"
    )
    environment = {
        "PLATEAU_HTTPS_HOST": host,
        "PLATEAU_HTTPS_PORT": str(port),
        "PLATEAU_TLS_CERT_FILE": str(cert),
        "PLATEAU_TLS_KEY_FILE": str(key),
    }
    return AccessDemo(f"https://{host}:{port}/", credentials, lines, environment)
