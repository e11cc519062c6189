"""Typed values of the header fields a B2BUA works with, and their parsers.

Each ``parse_*`` function takes one header value (already unfolded and, for list headers,
one element of the list) and raises ``SipParseError`` when it does not follow RFC 3261.
Each value type's ``str()`` is its canonical wire form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.grammar import (
    EMPTY_PARAMS,
    IPV6_REFERENCE,
    QUOTED,
    QUOTED_RE,
    TOKEN,
    WS,
    Params,
    parse_params,
    quote,
    split_simple_params,
    unquote,
)
from plateau_sip_gateway.sip.uri import (
    Uri,
    is_valid_host,
    parse_port,
    parse_uri,
)

MAX_UINT32 = 2**32 - 1
BRANCH_MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: a branch starting with this was made by an RFC 3261 element."""

_VIA_RE = re.compile(
    rf"({TOKEN}){WS}/{WS}({TOKEN}){WS}/{WS}({TOKEN})[ \t]+"
    rf"({IPV6_REFERENCE}|[A-Za-z0-9\-.]+)(?:{WS}:{WS}([0-9]+))?"
)
# The usual shapes, matched in one go; anything else takes the general path.
_FAST_VIA_RE = re.compile(
    rf"SIP/2\.0/({TOKEN}) ([A-Za-z0-9\-.]++)(?::([0-9]{{1,5}}))?((?:;{TOKEN}(?:={TOKEN})?)*+)"
)
_FAST_NAME_ADDR_RE = re.compile(
    rf'(?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*+)"[ \t]*+|({TOKEN}(?:[ \t]++{TOKEN})*+)[ \t]*+)?'
    rf"<([^\s<>\"]++)>((?:;{TOKEN}(?:={TOKEN})?)*+)"
)
_CSEQ_RE = re.compile(rf"([0-9]+)[ \t]+({TOKEN})")
_DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN}(?:[ \t]++{TOKEN})*+")
_PLAIN_DISPLAY_RE = re.compile(rf"{TOKEN}(?: {TOKEN})*+")
_NAME_ADDR_SPECIAL_RE = re.compile(r'[<";]')
_MEDIA_RE = re.compile(rf"({TOKEN}){WS}/{WS}({TOKEN})")
_AUTH_SCHEME_RE = re.compile(rf"({TOKEN})(?:[ \t]+|$)")
_AUTH_PARAM_RE = re.compile(rf"{WS}({TOKEN}){WS}={WS}({TOKEN}|{QUOTED}){WS}(?:,|$)")
_CALL_ID_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID_RE = re.compile(rf"{_CALL_ID_WORD}(?:@{_CALL_ID_WORD})?")
_DIGITS_RE = re.compile(r"[0-9]+")
_Q_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_MAX_COMMENT_DEPTH = 16
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def parse_uint(text: str, limit: int, what: str) -> int:
    """A decimal number in 0..limit (leading zeros allowed, as ``0068``)."""
    if len(text) <= 9 and text.isascii() and text.isdigit() and int(text) <= limit:
        return int(text)
    if _DIGITS_RE.fullmatch(text) is None:
        raise SipParseError(f"{what} is not a number: {text[:40]!r}")
    significant = text.lstrip("0")
    if len(significant) > len(str(limit)) or (significant and int(significant) > limit):
        raise SipParseError(f"{what} is out of range (0-{limit}): {text[:40]!r}")
    return int(significant) if significant else 0


class Via(NamedTuple):
    """One Via value: how and where the previous hop sent the request, and its branch."""

    transport: str
    host: str
    port: int | None = None
    params: Params = EMPTY_PARAMS

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{self.params}"

    @classmethod
    def new(
        cls, transport: str, host: str, port: int | None, branch: str, *, rport: bool = True
    ) -> Via:
        """A Via for a request this element sends (``rport`` asks for RFC 3581 handling)."""
        items: list[tuple[str, str | None]] = [("branch", branch)]
        if rport:
            items.append(("rport", None))
        return cls(transport.upper(), host, port, Params(tuple(items)))

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def has_rfc3261_branch(self) -> bool:
        """Whether the branch is an RFC 3261 one: the magic cookie followed by something.

        A bare ``z9hG4bK`` (RFC 4475 §3.2) or no branch means RFC 2543 matching rules.
        """
        branch = self.branch
        return (
            branch is not None
            and branch.startswith(BRANCH_MAGIC_COOKIE)
            and len(branch) > len(BRANCH_MAGIC_COOKIE)
        )

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """Whether the sender asked for (or was given) ``rport`` (RFC 3581)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The ``rport`` value filled in by the receiving element, if any."""
        value = self.params.get("rport")
        return None if not value else int(value)

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return None if value is None else int(value)

    def with_received(self, host: str, port: int | None = None) -> Via:
        """This Via as a server stamps it (RFC 3261 §18.2.1, RFC 3581 §4): ``received``
        set to the source address and, when ``rport`` was asked for, to the source port."""
        params = self.params.set("received", host)
        if port is not None and self.has_rport:
            params = params.set("rport", str(port))
        return Via(self.transport, self.host, self.port, params)


def parse_via(value: str) -> Via:
    """One Via value (``SIP/2.0/UDP host:port;branch=...``); LWS allowed around ``/``."""
    fast = _FAST_VIA_RE.fullmatch(value)
    if fast is not None:
        transport, host, port_text, param_text = fast.groups()
        params = split_simple_params(param_text) if param_text else EMPTY_PARAMS
    else:
        m = _VIA_RE.match(value)
        if m is None:
            raise SipParseError(f"malformed Via: {value[:80]!r}")
        name, version, transport, host, port_text = m.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Via is not SIP/2.0: {value[:80]!r}")
        params = parse_params(value, m.end(), "Via")
    if not is_valid_host(host):
        raise SipParseError(f"invalid host in Via: {host!r}")
    port = None if port_text is None else parse_port(port_text, "Via")
    _check_via_params(params)
    return Via(transport.upper(), host, port, params)


def _check_via_params(params: Params) -> None:
    for key, raw in params:
        lowered = key.lower()
        if lowered == "branch" and not raw:
            raise SipParseError("Via branch has no value")
        if lowered == "rport" and raw is not None:
            parse_port(raw, "Via rport")
        elif lowered == "ttl":
            parse_uint(raw or "", 255, "Via ttl")
        elif lowered in ("received", "maddr") and (raw is None or not is_valid_host(raw)):
            raise SipParseError(f"invalid Via {lowered}: {raw!r}")


def via_sent_by(value: str) -> bool:
    """Whether a (possibly malformed) Via value names a protocol and a sent-by host: enough
    to address an error response to it."""
    m = _VIA_RE.match(value)
    return m is not None and is_valid_host(m.group(4))


class NameAddr(NamedTuple):
    """A display name, a URI and header parameters: From, To, Contact, Route values."""

    uri: Uri
    display_name: str | None = None
    params: Params = EMPTY_PARAMS

    def __str__(self) -> str:
        if self.display_name is None:
            display = ""
        elif _PLAIN_DISPLAY_RE.fullmatch(self.display_name):
            display = self.display_name + " "
        else:
            display = quote(self.display_name) + " "
        return f"{display}<{self.uri}>{self.params}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter in seconds, if present and numeric."""
        value = self.params.get("expires")
        return int(value) if value and _DIGITS_RE.fullmatch(value) else None

    @property
    def q(self) -> float | None:
        """The Contact ``q`` preference (0 to 1), if present and well formed."""
        value = self.params.get("q")
        return float(value) if value and _Q_RE.fullmatch(value) else None

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display_name, self.params.set("tag", tag))


def parse_name_addr(value: str, what: str) -> NameAddr:
    """``"Display" <uri>;params``, ``Display <uri>;params`` or ``uri;params``.

    In the last (addr-spec) form the parameters belong to the header, not to the URI, so
    the URI cannot carry parameters, headers or commas (RFC 3261 §20). ``what`` names the
    header in error messages.
    """
    try:
        return _parse_name_addr(value)
    except SipParseError as exc:
        raise SipParseError(f"{what}: {exc.reason}") from None


def _parse_name_addr(value: str) -> NameAddr:
    fast = _FAST_NAME_ADDR_RE.fullmatch(value)
    if fast is not None:
        quoted, tokens, uri_text, param_text = fast.groups()
        display = quoted if quoted is not None else " ".join(tokens.split()) if tokens else None
        params = split_simple_params(param_text) if param_text else EMPTY_PARAMS
        return NameAddr(parse_uri(uri_text), display, params)
    special = _NAME_ADDR_SPECIAL_RE.search(value)
    if special is None or special.group() == ";":
        # addr-spec form
        end = len(value) if special is None else special.start()
        uri_text = value[:end].rstrip(" \t")
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("a URI with '?' or ',' must be enclosed in <>")
        return NameAddr(parse_uri(uri_text), None, parse_params(value, end, "name-addr"))
    display, lt = _display_name(value, special.start())
    gt = value.find(">", lt)
    if gt < 0:
        raise SipParseError("'<' without '>'")
    uri = parse_uri(value[lt + 1 : gt])
    return NameAddr(uri, display, parse_params(value, gt + 1, "name-addr"))


def _display_name(value: str, special: int) -> tuple[str | None, int]:
    """The display name before ``<`` and the position of that ``<``."""
    if value[special] != '"':
        tokens = value[:special].strip(" \t")
        if not tokens:
            return None, special
        if _DISPLAY_TOKENS_RE.fullmatch(tokens) is None:
            raise SipParseError(f"display name must be tokens or quoted: {tokens!r}")
        return " ".join(tokens.split()), special
    if value[:special].strip(" \t"):
        raise SipParseError("text before the quoted display name")
    quoted = QUOTED_RE.match(value, special)
    if quoted is None:
        raise SipParseError("unterminated quoted display name")
    lt = quoted.end()
    while lt < len(value) and value[lt] in " \t":
        lt += 1
    if lt >= len(value) or value[lt] != "<":
        raise SipParseError("quoted display name not followed by <uri>")
    return unquote(quoted.group()), lt


def parse_call_id(value: str) -> str:
    """A Call-ID: ``word [ "@" word ]``."""
    if _CALL_ID_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed Call-ID: {value[:80]!r}")
    return value


class CSeq(NamedTuple):
    """The command sequence: a number and the request method it belongs to."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """``number method``; the number must fit 32 bits (RFC 3261 §8.1.1.5)."""
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError(f"malformed CSeq: {value[:80]!r}")
    return CSeq(parse_uint(m.group(1), MAX_UINT32, "CSeq number"), m.group(2))


class MediaType(NamedTuple):
    """A media type (Content-Type) or an Accept media range (``*`` allowed)."""

    type: str
    subtype: str
    params: Params = EMPTY_PARAMS

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{self.params}"

    @property
    def mime(self) -> str:
        """``type/subtype``, lower-cased, without parameters."""
        return f"{self.type}/{self.subtype}".lower()

    @property
    def boundary(self) -> str | None:
        return self.params.get("boundary")

    def matches(self, mime: str) -> bool:
        """Whether this media range accepts ``mime`` (``type/subtype``; ``*`` wildcards)."""
        wanted_type, _, wanted_subtype = mime.lower().partition("/")
        own_type, own_subtype = self.type.lower(), self.subtype.lower()
        if own_type == "*":
            return True
        return own_type == wanted_type and own_subtype in ("*", wanted_subtype)


def parse_media_type(value: str) -> MediaType:
    m = _MEDIA_RE.match(value)
    if m is None:
        raise SipParseError(f"malformed media type: {value[:80]!r}")
    return MediaType(m.group(1), m.group(2), parse_params(value, m.end(), "media type"))


class AuthValue(NamedTuple):
    """A challenge (WWW-/Proxy-Authenticate) or credentials ((Proxy-)Authorization).

    Parameter values are kept in wire form (quoted where they were quoted); ``get``
    returns them unquoted. A scheme whose data is not ``name=value`` pairs keeps it whole
    in ``token68``.
    """

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    def __str__(self) -> str:
        if self.token68 is not None:
            return f"{self.scheme} {self.token68}"
        if not self.params:
            return self.scheme
        return self.scheme + " " + ", ".join(f"{k}={v}" for k, v in self.params)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    def get(self, name: str) -> str | None:
        """The unquoted value of parameter ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.params:
            if key.lower() == wanted:
                return unquote(value)
        return None

    @classmethod
    def of(cls, scheme: str, params: Iterable[tuple[str, str, bool]]) -> AuthValue:
        """A challenge or credentials from (name, value, quoted) triples."""
        return cls(scheme, tuple((k, quote(v) if q else v) for k, v, q in params))


def parse_auth(value: str) -> AuthValue:
    """``scheme name=value, name="quoted", ...`` (RFC 3261 §25.1 challenge/credentials)."""
    m = _AUTH_SCHEME_RE.match(value)
    if m is None:
        raise SipParseError(f"malformed authentication header: {value[:80]!r}")
    scheme = m.group(1)
    pos, end = m.end(), len(value)
    params: list[tuple[str, str]] = []
    while pos < end:
        p = _AUTH_PARAM_RE.match(value, pos)
        if p is None:
            if params or scheme.lower() == "digest":
                raise SipParseError(f"malformed {scheme} parameters: {value[:80]!r}")
            return AuthValue(scheme, (), value[pos:].strip(" \t"))
        params.append((p.group(1), p.group(2)))
        pos = p.end()
    return AuthValue(scheme, tuple(params))


class RetryAfter(NamedTuple):
    """When to retry: seconds, an optional comment and parameters (``duration``)."""

    seconds: int
    comment: str | None = None
    params: Params = EMPTY_PARAMS

    def __str__(self) -> str:
        comment = "" if self.comment is None else f" ({self.comment})"
        return f"{self.seconds}{comment}{self.params}"

    @property
    def duration(self) -> int | None:
        value = self.params.get("duration")
        return int(value) if value and _DIGITS_RE.fullmatch(value) else None


def parse_retry_after(value: str) -> RetryAfter:
    """``delta-seconds [ comment ] *( ;param )``."""
    m = _DIGITS_RE.match(value)
    if m is None:
        raise SipParseError(f"malformed Retry-After: {value[:80]!r}")
    seconds = parse_uint(m.group(), MAX_UINT32, "Retry-After")
    pos = m.end()
    while pos < len(value) and value[pos] in " \t":
        pos += 1
    comment = None
    if pos < len(value) and value[pos] == "(":
        close = _comment_end(value, pos)
        comment = value[pos + 1 : close]
        pos = close + 1
    params = parse_params(value, pos, "Retry-After")
    duration = params.raw("duration")
    if duration is not None:
        parse_uint(duration, MAX_UINT32, "Retry-After duration")
    return RetryAfter(seconds, comment, params)


def _comment_end(text: str, start: int) -> int:
    """Index of the ``)`` closing the comment opened at ``start`` (comments nest)."""
    depth = 0
    pos = start
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
            if depth > _MAX_COMMENT_DEPTH:
                raise SipParseError("comments nested too deeply in Retry-After")
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    raise SipParseError("unterminated comment in Retry-After")


def parse_date(value: str) -> datetime:
    """An RFC 1123 date in GMT, the only form RFC 3261 §20.17 allows."""
    m = _DATE_RE.fullmatch(value)
    if m is None:
        raise SipParseError(f"Date is not an RFC 1123 GMT date: {value[:60]!r}")
    _, day, month, year, hour, minute, second = m.groups()
    try:
        moment = datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError:
        raise SipParseError(f"Date is not a valid date: {value[:60]!r}") from None
    return moment


def format_date(moment: datetime) -> str:
    """``moment`` as a SIP Date value (RFC 1123, GMT)."""
    utc = moment.astimezone(UTC)
    month = next(m for m, i in _MONTHS.items() if i == utc.month)
    return (
        f"{_WEEKDAYS[utc.weekday()]}, {utc.day:02d} {month} {utc.year:04d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )


def parse_token_list(values: Iterable[str]) -> tuple[str, ...]:
    """Option tags or methods (Supported, Require, Allow...): empty elements skipped."""
    return tuple(v for v in values if v)


__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "MAX_UINT32",
    "AuthValue",
    "CSeq",
    "MediaType",
    "NameAddr",
    "RetryAfter",
    "Via",
    "format_date",
    "parse_auth",
    "parse_call_id",
    "parse_cseq",
    "parse_date",
    "parse_media_type",
    "parse_name_addr",
    "parse_retry_after",
    "parse_token_list",
    "parse_uint",
    "parse_via",
    "via_sent_by",
]
