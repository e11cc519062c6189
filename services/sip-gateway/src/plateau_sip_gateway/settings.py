"""The SIP gateway's settings: the runtime's, plus SIP listening, trunks, digest and agents."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import NamedTuple

from pydantic import Field, field_validator, model_validator

from plateau_runtime.settings import ServiceSettings
from plateau_sip_gateway.domain.digest import Algorithm
from plateau_sip_gateway.domain.edge import parse_networks
from plateau_sip_gateway.sip import SipUri, parse_uri
from plateau_sip_gateway.sip.endpoint import Destination
from plateau_sip_gateway.sip.transport import is_ip_literal


class GatewaySettings(ServiceSettings):
    """``PLATEAU_SIP_*`` variables (with the runtime's ``PLATEAU_*`` ones)."""

    sip_host: str = Field(default="127.0.0.1", description="Address SIP binds (UDP and TCP).")
    sip_port: int = Field(default=5060, ge=0, le=65535, description="SIP port; 0 picks one.")
    sip_tcp: bool = Field(default=True, description="Also listen on TCP (same port).")
    sip_advertised_host: str | None = Field(
        default=None, description="Host written in Via/Contact; needed behind a wildcard bind."
    )
    sip_trusted_proxies: str = Field(
        default="",
        description=(
            "Comma-separated CIDR networks of the SIP edge proxies (Kamailio's internal "
            "address) whose X-Plateau-Source header says where a request really came from; "
            "empty: no proxy is trusted and the header is ignored."
        ),
    )
    sip_outbound_proxy: str | None = Field(
        default=None,
        description=(
            "SIP URI of the edge proxy's replicas' socket (e.g. sip:kamailio-replicas:5080, "
            "looked up once at start): requests the gateway starts outside a dialog leave "
            "through it, with a preloaded Route naming it as written here."
        ),
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

    @field_validator("sip_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("sip_outbound_proxy")
    @classmethod
    def _proxy_uri(cls, value: str | None) -> str | None:
        if value:
            outbound_proxy(value)
        return value or None

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


class ProxyUri(NamedTuple):
    """The edge proxy as configured: transport, host (a name or an address), port, and the
    Route to preload, naming it as written (the name the proxy knows itself by)."""

    transport: str
    host: str
    port: int
    route: str


def outbound_proxy(text: str) -> ProxyUri:
    """``sip:kamailio-replicas:5080`` read (Route ``<sip:kamailio-replicas:5080;
    transport=udp;lr>``); ValueError unless a sip: URI over UDP or TCP."""
    try:
        uri = parse_uri(text.strip().strip("<>"))
    except ValueError:
        raise ValueError(f"the outbound proxy {text!r} is not a SIP URI") from None
    if not isinstance(uri, SipUri) or uri.scheme != "sip":
        raise ValueError(f"the outbound proxy {text!r} must be a sip: URI")
    transport = (uri.params.get("transport") or "udp").upper()
    if transport not in ("UDP", "TCP"):
        raise ValueError(f"the outbound proxy's transport {transport!r} is not UDP or TCP")
    port = uri.port or 5060
    route = f"<sip:{uri.host}:{port};transport={transport.lower()};lr>"
    return ProxyUri(transport, uri.host.strip("[]"), port, route)


class OutboundProxy(NamedTuple):
    """The edge proxy as resolved: where requests outside a dialog go, and the Route they
    carry to it."""

    next_hop: Destination
    route: str

    def toward(self, uri: str, transport: str) -> tuple[Destination, tuple[str, ...], str]:
        """Sending a request for ``uri`` (a peer reached over ``transport``) through the
        proxy: the next hop, the Route set, and the Request-URI, which alone tells the
        proxy how to reach the peer."""
        suffix = ";transport=tcp" if transport.upper() == "TCP" else ""
        return self.next_hop, (self.route,), uri + suffix


async def resolve_outbound_proxy(text: str) -> OutboundProxy:
    """Where to send for the outbound proxy ``text`` (its name looked up once: a
    Service's ClusterIP is stable) and the Route to preload; OSError when the name does
    not resolve."""
    proxy = outbound_proxy(text)
    host = proxy.host
    if not is_ip_literal(host):
        kind = socket.SOCK_STREAM if proxy.transport == "TCP" else socket.SOCK_DGRAM
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(host, proxy.port, type=kind)
        if not found:
            raise OSError(f"the outbound proxy's host {host!r} does not resolve")
        host = str(found[0][4][0])
    return OutboundProxy(Destination(proxy.transport, host, proxy.port), proxy.route)
