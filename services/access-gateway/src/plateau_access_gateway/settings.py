"""Settings of the access gateway (``PLATEAU_*`` variables), on top of every service's."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from plateau_runtime.settings import ServiceSettings


class AccessSettings(ServiceSettings):
    """Where the HTTPS API listens, its certificate, and its session and abuse limits."""

    https_host: str = Field(default="127.0.0.1", description="Address the HTTPS server binds.")
    https_port: int = Field(default=8443, ge=1, le=65535, description="Port of the HTTPS API.")
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate (chain) of the HTTPS server."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of it.")
    session_idle_minutes: int = Field(
        default=15, ge=1, le=24 * 60, description="Idle time after which a session locks."
    )
    session_lifetime_hours: int = Field(
        default=12, ge=1, le=7 * 24, description="Absolute lifetime of a session."
    )
    max_request_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    rate_per_source: int = Field(
        default=600, ge=1, description="Requests per minute one client address may make."
    )
    export_signing_key: str | None = Field(
        default=None,
        description="Ed25519 private key exports are signed with (PEM or base64 of the raw "
        "32 bytes; from a Secret in production). Unset: one generated once into the home.",
    )
    rate_per_principal: int = Field(
        default=300, ge=1, description="Requests per minute one user or token may make."
    )
