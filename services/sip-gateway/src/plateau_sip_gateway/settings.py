"""The SIP gateway's settings: the runtime's, plus SIP listening, trunks, digest and agents."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from plateau_runtime.settings import ServiceSettings
from plateau_sip_gateway.domain.digest import Algorithm


class GatewaySettings(ServiceSettings):
    """``PLATEAU_SIP_*`` variables (with the runtime's ``PLATEAU_*`` ones)."""

    sip_host: str = Field(default="127.0.0.1", description="Address SIP binds (UDP and TCP).")
    sip_port: int = Field(default=5060, ge=0, le=65535, description="SIP port; 0 picks one.")
    sip_tcp: bool = Field(default=True, description="Also listen on TCP (same port).")
    sip_advertised_host: str | None = Field(
        default=None, description="Host written in Via/Contact; needed behind a wildcard bind."
    )
    sip_trunks_file: Path | None = Field(
        default=None,
        description="JSON trunks file (TrunksConfig); unset: the demo trunk from 127.0.0.1.",
    )
    sip_extensions_file: Path | None = Field(
        default=None,
        description=(
            "JSON {extension: password}; unset: demo extensions 1001-1010 with passwords "
            "generated at first start into <PLATEAU_HOME>/sip-extensions.json."
        ),
    )
    sip_realm: str = Field(default="plateau", description="Digest realm of the registrar.")
    # MD5 by default: Debian's baresip 1.0 (libre 1.1) gives up on a 401 as soon as any
    # challenge offers SHA-256. Set "SHA-256,MD5" once every softphone supports RFC 8760.
    sip_digest_algorithms: str = Field(
        default="MD5", description="Comma-separated digest algorithms offered, in order."
    )
    sip_nonce_secret: str = Field(
        default="",
        description="Key signing nonces (hex or text); empty: a random one per process.",
    )
    sip_tenant: str = Field(
        default="demo", description="Tenant the extensions' registration facts belong to."
    )
    sip_ring_timeout_s: float = Field(
        default=15.0, gt=0, le=300, description="Agent ring time when ConnectAgent gives none."
    )
    sip_rtpengine_enabled: bool = Field(default=False, description="Anchor media in rtpengine.")
    sip_rtpengine_ng: str | None = Field(default=None, description="rtpengine ng HOST:PORT.")
    sip_media_file: Path | None = Field(
        default=None,
        description=(
            "JSON MediaConfig: per entry point greeting/music/record, and the outbound "
            "compliance message; needs rtpengine. Unset: ringback only, no recording."
        ),
    )

    # Several replicas (a StatefulSet behind a dispatcher): each names itself and says where
    # its peers reach its CallControl. Both empty: one gateway, everything in its memory.
    sip_replica: str = Field(
        default="",
        description=(
            "This replica's stable name (e.g. the pod name sip-gateway-0); empty: a single "
            "gateway, no call owners or shared registrations."
        ),
    )
    sip_replica_address: str = Field(
        default="",
        description=(
            "HOST:PORT where the other replicas reach this replica's CallControl "
            "(e.g. sip-gateway-0.sip-gateway-pods:50051); required with PLATEAU_SIP_REPLICA."
        ),
    )
    sip_replica_resync_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often a replica reloads every shared registration (a safety net).",
    )

    @field_validator("sip_nonce_secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value.encode()) < 16:
            raise ValueError("a nonce secret needs at least 16 bytes (or leave it empty)")
        return value

    @field_validator("sip_digest_algorithms")
    @classmethod
    def _known_algorithms(cls, value: str) -> str:
        digest_algorithms(value)
        return value

    @model_validator(mode="after")
    def _replica_has_address(self) -> GatewaySettings:
        if self.sip_replica and not self.sip_replica_address:
            raise ValueError(
                "PLATEAU_SIP_REPLICA needs PLATEAU_SIP_REPLICA_ADDRESS (where peers reach it)"
            )
        if self.sip_replica_address and not self.sip_replica:
            raise ValueError("PLATEAU_SIP_REPLICA_ADDRESS needs PLATEAU_SIP_REPLICA (its name)")
        return self

    @property
    def clustered(self) -> bool:
        """Whether this gateway is one of several replicas sharing calls and registrations."""
        return bool(self.sip_replica)


def digest_algorithms(text: str) -> tuple[Algorithm, ...]:
    """``"SHA-256,MD5"`` as algorithms; ValueError naming an unknown one."""
    found: list[Algorithm] = []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        algorithm = Algorithm.parse(name)
        if algorithm is None:
            raise ValueError(f"unknown digest algorithm {name!r}: use MD5 and/or SHA-256")
        found.append(algorithm)
    if not found:
        raise ValueError("offer at least one digest algorithm (MD5 or SHA-256)")
    return tuple(found)
