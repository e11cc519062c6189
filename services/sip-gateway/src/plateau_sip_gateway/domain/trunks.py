"""Carrier trunks: who may send calls in, where their numbers lead, how many calls they carry.

A trunk is a configured carrier peer: the networks its INVITEs come from, the addresses
the gateway sends outbound calls and OPTIONS keep-alives to, the dialled numbers (DNIS)
it delivers mapped to a tenant's entry points, and its capacity.

Decisions on an inbound INVITE (``TrunkDirectory.classify``), in this order:

* source address on no trunk's networks -> **403 Forbidden**, ``not_a_trunk``. The
  source is matched by IP only (carriers send from varying ports); IPv4-mapped IPv6
  addresses (``::ffff:192.0.2.1``, as dual-stack sockets report them) count as IPv4.
  Networks may overlap: the most specific one wins (longest prefix), so a carrier's /24
  can sit inside another's /16. The same network on two trunks is a configuration error.
* the trunk is switched off -> **503 Service Unavailable** without Retry-After,
  ``trunk_disabled``: 503 tells the carrier to try its other routes (RFC 3261 §21.5.4).
* the DNIS, normalised to E.164 in the trunk's region, is not one of *that trunk's*
  numbers -> **404 Not Found**, ``unknown_dnis``. Not 604 Does Not Exist Anywhere: a 6xx
  is a global, authoritative answer (RFC 3261 §21.6) that stops the carrier from trying
  other destinations, and the gateway only knows its own numbers.

Admission control (over capacity -> 503 with Retry-After) is in ``admission``.

Capacity is either configured (``max_calls``) or derived from the trunk's bandwidth and
codec (``calls_for_bandwidth``), with the per-call bandwidth of one direction:

    payload  = codec bit rate x ptime / 8                          (bytes per packet)
    packet   = payload + RTP 12 + UDP 8 + IP (20 v4 | 40 v6) + link layer
    per call = packet x 8 x (1000 / ptime)                          (bit/s, each way)
    calls    = floor(link bandwidth / per call)

With Ethernet's 18 bytes (14 header + 4 FCS; preamble and inter-frame gap are not
counted, as in the usual carrier tables):

    G.711 20 ms: (160 + 40 + 18) x 8 x 50  = 87.2 kbit/s -> 45 calls in 4 Mbit/s
    G.711 30 ms: (240 + 40 + 18) x 8 x 33.3 = 79.5 kbit/s -> 50 calls in 4 Mbit/s
    G.729 20 ms: (20 + 40 + 18) x 8 x 50   = 31.2 kbit/s -> 128 calls in 4 Mbit/s

Links are full duplex, so a symmetric 4 Mbit/s access carries 45 G.711 calls.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from plateau_contracts.events.calls import CallRejected, RejectReason
from plateau_sip_gateway.domain.numbers import (
    DEFAULT_REGION,
    MalformedNumberError,
    normalise,
    try_normalise,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# -- bandwidth per call -----------------------------------------------------------------

RTP_HEADER_BYTES = 12
UDP_HEADER_BYTES = 8
IP_HEADER_BYTES = {4: 20, 6: 40}


class Codec(StrEnum):
    """Audio codecs whose bandwidth the gateway can compute."""

    G711 = "g711"  # PCMU / PCMA, 64 kbit/s
    G729 = "g729"  # 8 kbit/s, 10 ms frames


CODEC_BITRATE_BPS = {Codec.G711: 64_000, Codec.G729: 8_000}


class LinkLayer(StrEnum):
    """Layer-2 framing counted on top of each IP packet."""

    ETHERNET = "ethernet"  # 14-byte header + 4-byte FCS
    ETHERNET_VLAN = "ethernet_vlan"  # plus an 802.1Q tag
    NONE = "none"  # IP bandwidth only (e.g. a carrier quoting IP-level capacity)


LINK_OVERHEAD_BYTES = {LinkLayer.ETHERNET: 18, LinkLayer.ETHERNET_VLAN: 22, LinkLayer.NONE: 0}


def _packet_bytes(codec: Codec, ptime_ms: int, ip_version: Literal[4, 6], link: LinkLayer) -> int:
    if ptime_ms < 10 or ptime_ms > 120 or ptime_ms % 10:
        raise ValueError(f"ptime must be a multiple of 10 ms between 10 and 120, not {ptime_ms}")
    payload = CODEC_BITRATE_BPS[codec] * ptime_ms // 8000
    return (
        payload
        + RTP_HEADER_BYTES
        + UDP_HEADER_BYTES
        + IP_HEADER_BYTES[ip_version]
        + LINK_OVERHEAD_BYTES[link]
    )


def call_bandwidth_bps(
    codec: Codec,
    ptime_ms: int = 20,
    *,
    ip_version: Literal[4, 6] = 4,
    link: LinkLayer = LinkLayer.ETHERNET,
) -> float:
    """Bit rate of one call's RTP in one direction, headers included (module docstring)."""
    return _packet_bytes(codec, ptime_ms, ip_version, link) * 8 * 1000 / ptime_ms


def calls_for_bandwidth(
    bandwidth_bps: int,
    codec: Codec,
    ptime_ms: int = 20,
    *,
    ip_version: Literal[4, 6] = 4,
    link: LinkLayer = LinkLayer.ETHERNET,
) -> int:
    """How many whole calls fit in ``bandwidth_bps`` (each way); exact integer arithmetic."""
    packet_bits = _packet_bytes(codec, ptime_ms, ip_version, link) * 8
    return bandwidth_bps * ptime_ms // (packet_bits * 1000)


# -- configuration ----------------------------------------------------------------------

_TRUNK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_REGION = re.compile(r"^[A-Z]{2}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FixedCapacity(_Frozen):
    """A capacity stated as a number of concurrent calls."""

    kind: Literal["calls"] = "calls"
    max_calls: int = Field(ge=1, description="Concurrent calls at most.", examples=[30])

    @property
    def calls(self) -> int:
        """Concurrent calls at most."""
        return self.max_calls


class BandwidthCapacity(_Frozen):
    """A capacity derived from the access bandwidth and the codec carried."""

    kind: Literal["bandwidth"] = "bandwidth"
    bandwidth_kbps: int = Field(ge=1, description="Access bandwidth each way.", examples=[4000])
    codec: Codec = Field(default=Codec.G711, description="Codec the calls use.")
    ptime_ms: int = Field(default=20, description="Packetisation time.", examples=[20])
    ip_version: Literal[4, 6] = Field(default=4, description="IP version of the media.")
    link: LinkLayer = Field(default=LinkLayer.ETHERNET, description="Framing counted.")

    @model_validator(mode="after")
    def _fits_one_call(self) -> BandwidthCapacity:
        # `_packet_bytes` checks the ptime; its ValueError becomes a field-named error.
        if self.calls < 1:
            per_call = call_bandwidth_bps(
                self.codec, self.ptime_ms, ip_version=self.ip_version, link=self.link
            )
            raise ValueError(
                f"bandwidth_kbps={self.bandwidth_kbps} carries no {self.codec} call "
                f"(one needs {per_call / 1000:.1f} kbit/s)"
            )
        return self

    @property
    def calls(self) -> int:
        """Concurrent calls the bandwidth carries."""
        return calls_for_bandwidth(
            self.bandwidth_kbps * 1000,
            self.codec,
            self.ptime_ms,
            ip_version=self.ip_version,
            link=self.link,
        )


class SipTarget(_Frozen):
    """An address of the carrier that outbound INVITEs and OPTIONS are sent to."""

    host: str = Field(min_length=1, description="IP address or host name.")
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"


class TrunkConfig(_Frozen):
    """One carrier trunk, as configured by the operator."""

    name: str = Field(description="Unique trunk name, lowercase.", examples=["mno"])
    tenant: str = Field(min_length=1, description="Tenant whose calls the trunk carries.")
    enabled: bool = Field(default=True, description="False refuses its calls with 503.")
    source_networks: tuple[IPNetwork, ...] = Field(
        min_length=1,
        description="Networks the carrier's INVITEs come from (IPv4 or IPv6, CIDR).",
        examples=[["192.0.2.0/28", "2001:db8:10::/64"]],
    )
    outbound: tuple[SipTarget, ...] = Field(
        default=(), description="Where outbound calls and OPTIONS go, in order of preference."
    )
    region: str = Field(
        default=DEFAULT_REGION, description="ISO region national numbers are read in."
    )
    entry_points: Mapping[str, str] = Field(
        default_factory=dict,
        description="Dialled number (E.164 or national) -> the tenant's entry point.",
        examples=[{"+242053000100": "sales"}],
    )
    options_interval_s: int = Field(
        default=30, ge=0, description="OPTIONS keep-alive period; 0 turns keep-alives off."
    )
    capacity: Annotated[FixedCapacity | BandwidthCapacity, Field(discriminator="kind")]
    retry_after_s: int = Field(
        default=10, ge=1, le=3600, description="Retry-After sent with a 503 when full."
    )

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _TRUNK_NAME.fullmatch(value):
            raise ValueError("use lowercase letters, digits, '.', '_' or '-' (at most 63)")
        return value

    @field_validator("region")
    @classmethod
    def _region_shape(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not a two-letter ISO region such as 'CG'")
        return value

    @field_validator("source_networks", mode="before")
    @classmethod
    def _strict_networks(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            return value
        networks: list[IPNetwork] = []
        for item in value:
            if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.append(item)
                continue
            try:
                networks.append(ipaddress.ip_network(str(item), strict=True))
            except ValueError as exc:
                loose = _loose_network(str(item))
                hint = f"; did you mean {loose}?" if loose is not None else ""
                raise ValueError(f"{item!r} is not a network: {exc}{hint}") from None
        return tuple(networks)

    @field_validator("entry_points")
    @classmethod
    def _normalise_dnis(cls, value: Mapping[str, str], info: ValidationInfo) -> Mapping[str, str]:
        # The region is validated before this field (declaration order); when it failed,
        # its own error is reported and the default region reads these numbers.
        region = info.data.get("region", DEFAULT_REGION)
        normalised: dict[str, str] = {}
        for dnis, entry_point in value.items():
            try:
                e164 = normalise(dnis, region)
            except MalformedNumberError as exc:
                raise ValueError(f"dialled number {dnis!r}: {exc}") from None
            if not entry_point:
                raise ValueError(f"dialled number {dnis!r} maps to an empty entry point")
            if e164 in normalised and normalised[e164] != entry_point:
                raise ValueError(
                    f"dialled number {dnis!r} is {e164}, already mapped to "
                    f"{normalised[e164]!r}; it cannot also lead to {entry_point!r}"
                )
            normalised[e164] = entry_point
        return normalised

    @property
    def max_calls(self) -> int:
        """Concurrent calls the trunk admits."""
        return self.capacity.calls


def _loose_network(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


class TrunksConfig(_Frozen):
    """Every trunk of the gateway; checks what only makes sense across trunks."""

    trunks: tuple[TrunkConfig, ...] = Field(default=())

    @model_validator(mode="after")
    def _consistent(self) -> TrunksConfig:
        names: set[str] = set()
        owner_of_network: dict[IPNetwork, str] = {}
        owner_of_dnis: dict[str, tuple[str, str, str]] = {}
        for trunk in self.trunks:
            if trunk.name in names:
                raise ValueError(f"trunk name {trunk.name!r} is used twice")
            names.add(trunk.name)
            for network in trunk.source_networks:
                other = owner_of_network.setdefault(network, trunk.name)
                if other != trunk.name:
                    raise ValueError(
                        f"source network {network} is on trunks {other!r} and {trunk.name!r}: "
                        "a source must identify one trunk"
                    )
            for dnis, entry_point in trunk.entry_points.items():
                seen = owner_of_dnis.setdefault(dnis, (trunk.name, trunk.tenant, entry_point))
                if seen[1:] != (trunk.tenant, entry_point):
                    raise ValueError(
                        f"dialled number {dnis} leads to tenant {seen[1]!r} entry point "
                        f"{seen[2]!r} on trunk {seen[0]!r} but to tenant {trunk.tenant!r} "
                        f"entry point {entry_point!r} on trunk {trunk.name!r}"
                    )
        return self


# -- classification ---------------------------------------------------------------------


@dataclass(frozen=True)
class InboundAccepted:
    """An INVITE from a trunk to one of its numbers: offer it (after admission)."""

    trunk: TrunkConfig
    dnis: str  # E.164
    entry_point: str

    @property
    def tenant(self) -> str:
        """Tenant the call belongs to."""
        return self.trunk.tenant


@dataclass(frozen=True)
class InboundRefused:
    """An inbound INVITE the gateway answers with a final error and records as rejected."""

    reason: RejectReason
    sip_code: int
    detail: str
    trunk: str | None = None
    tenant: str | None = None
    retry_after_s: int | None = None  # sent as Retry-After with a 503

    def to_event(
        self,
        call_id: str,
        *,
        source: str,
        ani: str | None = None,
        dnis: str | None = None,
        sip_call_id: str | None = None,
    ) -> CallRejected:
        """The ``call.rejected`` fact recording this refusal (``source`` is ``host:port``)."""
        return CallRejected(
            call_id=call_id,
            reason=self.reason,
            sip_code=self.sip_code,
            source=source,
            trunk=self.trunk,
            ani=ani,
            dnis=dnis,
            sip_call_id=sip_call_id,
            detail=self.detail,
        )


InboundDecision = InboundAccepted | InboundRefused

NOT_A_TRUNK_CODE = 403
TRUNK_DISABLED_CODE = 503
UNKNOWN_DNIS_CODE = 404


def parse_source(source: str | IPAddress) -> IPAddress | None:
    """The IP address of a source, IPv4-mapped IPv6 unwrapped; ``None`` when unreadable."""
    if isinstance(source, str):
        try:
            address: IPAddress = ipaddress.ip_address(source.strip("[]"))
        except ValueError:
            return None
    else:
        address = source
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrunkDirectory:
    """Looks trunks up by source address and name, and classifies inbound INVITEs."""

    def __init__(self, config: TrunksConfig | Iterable[TrunkConfig]) -> None:
        trunks = config.trunks if isinstance(config, TrunksConfig) else tuple(config)
        checked = TrunksConfig(trunks=tuple(trunks))
        self._by_name = {trunk.name: trunk for trunk in checked.trunks}
        # Longest prefix first, so the first containing network is the most specific.
        self._networks = sorted(
            ((network, trunk) for trunk in checked.trunks for network in trunk.source_networks),
            key=lambda pair: -pair[0].prefixlen,
        )

    def __iter__(self) -> Iterator[TrunkConfig]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> TrunkConfig | None:
        """The trunk called ``name``, if configured."""
        return self._by_name.get(name)

    def trunk_for_source(self, source: str | IPAddress) -> TrunkConfig | None:
        """The trunk whose most specific network contains ``source``; ``None``: not a trunk."""
        address = parse_source(source)
        if address is None:
            return None
        for network, trunk in self._networks:
            if address.version == network.version and address in network:
                return trunk
        return None

    def entry_point(self, trunk: TrunkConfig, dialled: str) -> str | None:
        """The entry point ``dialled`` (E.164 or national) leads to on ``trunk``, if any."""
        e164 = try_normalise(dialled, trunk.region)
        return trunk.entry_points.get(e164) if e164 is not None else None

    def outbound_for(self, tenant: str) -> TrunkConfig | None:
        """The trunk the tenant's outbound calls leave on: its first enabled trunk that has
        an outbound address, in configuration order."""
        for trunk in self._by_name.values():
            if trunk.tenant == tenant and trunk.enabled and trunk.outbound:
                return trunk
        return None

    def classify(self, source: str | IPAddress, dnis: str | None) -> InboundDecision:
        """Decide on an inbound INVITE from ``source`` (IP) to ``dnis`` (as received)."""
        trunk = self.trunk_for_source(source)
        if trunk is None:
            return InboundRefused(
                RejectReason.NOT_A_TRUNK,
                NOT_A_TRUNK_CODE,
                f"source {source} is on no trunk's networks",
            )
        if not trunk.enabled:
            return InboundRefused(
                RejectReason.TRUNK_DISABLED,
                TRUNK_DISABLED_CODE,
                f"trunk {trunk.name} is switched off",
                trunk=trunk.name,
                tenant=trunk.tenant,
            )
        e164 = try_normalise(dnis, trunk.region) if dnis else None
        entry_point = trunk.entry_points.get(e164) if e164 is not None else None
        if e164 is None or entry_point is None:
            return InboundRefused(
                RejectReason.UNKNOWN_DNIS,
                UNKNOWN_DNIS_CODE,
                f"dialled number {dnis!r} is not a number of trunk {trunk.name}",
                trunk=trunk.name,
                tenant=trunk.tenant,
            )
        return InboundAccepted(trunk=trunk, dnis=e164, entry_point=entry_point)
