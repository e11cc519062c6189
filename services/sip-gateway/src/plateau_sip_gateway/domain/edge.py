"""Behind the SIP edge: which proxies are trusted, and the real source they report.

Behind Kamailio every request reaches the gateway from the proxy's address. The proxy
writes the address the request really came from in ``X-Plateau-Source`` (having removed
any such header an outsider sent); the gateway believes it only when the packet itself
comes from one of ``sip_trusted_proxies``. From anywhere else the header is ignored: it
would otherwise let anyone pose as a carrier's network or dodge the guard's lockout.

Header value: ``<transport> <address>:<port>``, e.g. ``UDP 203.0.113.7:5060`` or
``tcp [2001:db8::7]:5061``. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

SOURCE_HEADER = "X-Plateau-Source"
TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "SCTP", "WS", "WSS"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ForwardedSourceError(ValueError):
    """A trusted proxy sent an X-Plateau-Source the gateway cannot read."""


@dataclass(frozen=True)
class ForwardedSource:
    """Where a relayed request really came from: the peer's transport, address and port."""

    transport: str
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def parse_forwarded_source(value: str) -> ForwardedSource:
    """``"UDP 203.0.113.7:5060"`` read; ForwardedSourceError saying what is wrong."""
    parts = value.split()
    if len(parts) != 2:
        raise ForwardedSourceError(
            f"{SOURCE_HEADER} must be '<transport> <address>:<port>', got {value!r}"
        )
    transport, where = parts[0].upper(), parts[1]
    if transport not in TRANSPORTS:
        raise ForwardedSourceError(f"{SOURCE_HEADER} names an unknown transport {parts[0]!r}")
    if where.startswith("["):
        host, bracket, rest = where[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ForwardedSourceError(f"{SOURCE_HEADER} address {where!r} lacks ']:<port>'")
        port_text = rest[1:]
    else:
        host, colon, port_text = where.rpartition(":")
        if not colon or ":" in host:
            raise ForwardedSourceError(
                f"{SOURCE_HEADER} address {where!r} must be <IPv4>:<port> or [<IPv6>]:<port>"
            )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ForwardedSourceError(f"{SOURCE_HEADER} host {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ForwardedSourceError(f"{SOURCE_HEADER} port {port_text!r} is not 1-65535")
    return ForwardedSource(transport, str(address), int(port_text))


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.0.2.1"`` as networks (a bare address is a /32 or /128);
    ValueError naming an entry that is not one."""
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


class TrustedProxies:
    """The networks whose packets may say where a request really came from."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        return cls(parse_networks(text))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        """Whether a packet from ``host`` comes from a trusted proxy (never when none)."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def real_source(self, host: str, values: Iterable[str]) -> ForwardedSource | None:
        """The source a trusted proxy reports in ``values`` (the request's X-Plateau-Source
        headers) for a packet from ``host``; None when ``host`` is not trusted or the
        proxy reported nothing (the request is its own, e.g. a probe); a malformed or
        repeated header from a trusted proxy is a ForwardedSourceError."""
        if not self.trusts(host):
            return None
        found = [value for value in values if value.strip()]
        if not found:
            return None
        if len(found) > 1:
            raise ForwardedSourceError(f"{SOURCE_HEADER} appears {len(found)} times, need one")
        return parse_forwarded_source(found[0])


__all__ = [
    "SOURCE_HEADER",
    "ForwardedSource",
    "ForwardedSourceError",
    "TrustedProxies",
    "parse_forwarded_source",
    "parse_networks",
]
