"""SIP and SIPS URIs (RFC 3261 §19.1) and other absolute URIs (``tel:``, ``urn:``...)."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple, TypeAlias
from urllib.parse import quote as _percent_quote
from urllib.parse import unquote as _percent_unquote

from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.grammar import EMPTY_PARAMS, Params, split_simple_params

SIP_SCHEMES = frozenset({"sip", "sips"})

_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER_SAFE = "-_.!~*'()&=+$,;?/"


def _escapable(chars: str) -> str:
    """Any run of ``chars`` and %-escapes (possibly empty), possessively."""
    return rf"[{chars}]*+(?:{_ESCAPED}[{chars}]*+)*+"


_USER_RE = re.compile(_escapable(_UNRESERVED + "&=+$,;?/"))
_PASSWORD_RE = re.compile(_escapable(_UNRESERVED + "&=+$,"))
_PARAM_RE = re.compile(_escapable(_UNRESERVED + r"\[\]/:&+$"))
_HNAME_RE = re.compile(_escapable(_UNRESERVED + r"\[\]/?:+$"))
_HVALUE_RE = _HNAME_RE
_MAX_HOST_LENGTH = 256  # a DNS name has at most 255 octets (and a trailing dot)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_LABEL_RE = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9]")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OPAQUE_RE = re.compile(_escapable(_UNRESERVED + r";/?:@&=+$,\[\]#"))

# The common shape (plain user, hostname or IPv4, simple parameters) in one match; any
# other URI takes the general path.
_FAST_SIP_RE = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]++)@)?([A-Za-z0-9\-.]++)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]++(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]++)?)*+)"
)

# RFC 3261 §19.1.4: these URI parameters must match when either URI carries them.
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def unescape(text: str) -> str:
    """``text`` with %-escapes decoded (as UTF-8; undecodable octets survive as surrogates)."""
    return _percent_unquote(text, errors="surrogateescape") if "%" in text else text


def escape_user(text: str) -> str:
    """``text`` %-escaped for the user part of a SIP URI (RFC 3261 §25.1 ``user``)."""
    return _percent_quote(text, safe=_USER_SAFE, errors="surrogateescape")


def is_valid_host(host: str) -> bool:
    """Whether ``host`` is a hostname, an IPv4 address or a bracketed IPv6 reference."""
    # The same few hosts (trunks, agents' phones, this gateway) recur in every message.
    return len(host) <= _MAX_HOST_LENGTH and _is_valid_host(host)


@functools.lru_cache(maxsize=1024)
def _is_valid_host(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    name = host[:-1] if host.endswith(".") else host
    if not name:
        return False
    return all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def parse_port(text: str, what: str) -> int:
    """A port number (0-65535)."""
    if _PORT_RE.fullmatch(text) is None or int(text) > 65535:
        raise SipParseError(f"invalid port in {what}: {text!r}")
    return int(text)


def split_host_port(text: str, what: str) -> tuple[str, int | None]:
    """``host[:port]`` (host possibly an IPv6 reference) split and checked."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what}: {text!r}")
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"unexpected text after the host in {what}: {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
    if not is_valid_host(host):
        raise SipParseError(f"invalid host in {what}: {host!r}")
    return host, None if port_text is None else parse_port(port_text, what)


class SipUri(NamedTuple):
    """A ``sip:`` or ``sips:`` URI (an immutable value; build it with keywords).

    Every part is kept in wire form (escapes intact) so that ``str(uri)`` reproduces it;
    ``unescaped_user`` and ``equivalent`` apply the RFC 3261 §19.1.4 rules.
    """

    host: str
    user: str | None = None
    port: int | None = None
    params: Params = EMPTY_PARAMS
    scheme: str = "sip"
    password: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        if self.params.items:
            parts.append(str(self.params))
        if self.headers:
            parts += ("?", "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(parts)

    @property
    def is_sips(self) -> bool:
        return self.scheme == "sips"

    @property
    def unescaped_user(self) -> str | None:
        """The user part with %-escapes decoded."""
        return None if self.user is None else unescape(self.user)

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port`` as written in the URI."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def default_port(self) -> int:
        """The port to use when none is given (5061 for SIPS, 5060 otherwise)."""
        return 5061 if self.is_sips else 5060

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased."""
        value = self.params.get("transport")
        return None if value is None else value.lower()

    @property
    def loose_route(self) -> bool:
        """Whether the URI carries ``lr`` (a loose router, RFC 3261 §16.12)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    def with_params(self, params: Params) -> SipUri:
        return self._replace(params=params)

    def without_headers(self) -> SipUri:
        """This URI without its ``?header=value`` part (as a Request-URI must be)."""
        return self._replace(headers=())

    def equivalent(self, other: Uri) -> bool:
        """Whether the two URIs are equal under RFC 3261 §19.1.4."""
        if not (
            isinstance(other, SipUri)
            and self.scheme == other.scheme
            and _unescaped(self.user) == _unescaped(other.user)
            and _unescaped(self.password) == _unescaped(other.password)
            and self.host.lower() == other.host.lower()
            and self.port == other.port
        ):
            return False
        mine, theirs = _param_map(self.params), _param_map(other.params)
        for name in _SIGNIFICANT_PARAMS:
            if (name in mine or name in theirs) and mine.get(name, ()) != theirs.get(name, ()):
                return False
        if any(mine[name] != theirs[name] for name in mine.keys() & theirs.keys()):
            return False
        return _header_map(self.headers) == _header_map(other.headers)


class AbsoluteUri(NamedTuple):
    """A URI of another scheme (``tel:``, ``urn:``, ``http:``...), kept opaque."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def equivalent(self, other: Uri) -> bool:
        """Scheme compared case-insensitively, the rest exactly."""
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme.lower() == other.scheme.lower()
            and self.opaque == other.opaque
        )


Uri: TypeAlias = SipUri | AbsoluteUri
"""Any URI a SIP message can carry."""


def _unescaped(text: str | None) -> str | None:
    return None if text is None else unescape(text)


def _param_map(params: Params) -> dict[str, tuple[str, ...]]:
    return {unescape(k).lower(): (() if v is None else (unescape(v).lower(),)) for k, v in params}


def _header_map(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {unescape(k).lower(): unescape(v) for k, v in headers}


def parse_uri(text: str) -> Uri:
    """A SIP/SIPS URI or any other absolute URI; raises SipParseError when malformed."""
    fast = _FAST_SIP_RE.fullmatch(text)
    if fast is not None:
        scheme, user, host, port, params = fast.groups()
        if is_valid_host(host) and (port is None or int(port) <= 65535):
            return SipUri(
                host,
                user,
                None if port is None else int(port),
                split_simple_params(params) if params else EMPTY_PARAMS,
                scheme,
            )
    colon = text.find(":")
    if colon <= 0 or _SCHEME_RE.fullmatch(text, 0, colon) is None:
        raise SipParseError(f"not a URI (no scheme): {text[:80]!r}")
    scheme = text[:colon].lower()
    if scheme in SIP_SCHEMES:
        return _parse_sip(scheme, text[colon + 1 :], text)
    opaque = text[colon + 1 :]
    if not opaque or _OPAQUE_RE.fullmatch(opaque) is None:
        raise SipParseError(f"malformed {scheme}: URI: {text[:80]!r}")
    return AbsoluteUri(text[:colon], opaque)


def parse_sip_uri(text: str) -> SipUri:
    """A ``sip:`` or ``sips:`` URI; raises SipParseError for any other scheme."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise SipParseError(f"not a SIP URI: {text[:80]!r}")
    return uri


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    # '@' can appear nowhere else in a SIP URI, while the user part may hold ';' '?' ','.
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if colon:
            if _PASSWORD_RE.fullmatch(pw) is None:
                raise SipParseError(f"invalid password in URI {text[:80]!r}")
            password = pw
        if not user or _USER_RE.fullmatch(user) is None:
            raise SipParseError(f"invalid user part in URI {text[:80]!r}")
    headers: tuple[tuple[str, str], ...] = ()
    question = rest.find("?")
    if question >= 0:
        headers = _parse_uri_headers(rest[question + 1 :], text)
        rest = rest[:question]
    params = EMPTY_PARAMS
    semi = rest.find(";")
    if semi >= 0:
        params = _parse_uri_params(rest[semi + 1 :], text)
        rest = rest[:semi]
    host, port = split_host_port(rest, f"URI {text[:80]!r}")
    return SipUri(host, user, port, params, scheme, password, headers)


def _is_paramchars(text: str) -> bool:
    return bool(text) and _PARAM_RE.fullmatch(text) is not None


def _parse_uri_params(text: str, uri: str) -> Params:
    items: list[tuple[str, str | None]] = []
    for chunk in text.split(";"):
        name, equals, value = chunk.partition("=")
        if not _is_paramchars(name) or (equals and not _is_paramchars(value)):
            raise SipParseError(f"invalid URI parameter {chunk[:40]!r} in {uri[:80]!r}")
        items.append((name, value if equals else None))
    return Params(tuple(items))


def _parse_uri_headers(text: str, uri: str) -> tuple[tuple[str, str], ...]:
    items: list[tuple[str, str]] = []
    for chunk in text.split("&"):
        name, equals, value = chunk.partition("=")
        if not (equals and name and _HNAME_RE.fullmatch(name) and _HVALUE_RE.fullmatch(value)):
            raise SipParseError(f"invalid URI header {chunk[:40]!r} in {uri[:80]!r}")
        items.append((name, value))
    return tuple(items)
