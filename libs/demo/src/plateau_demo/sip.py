"""SIP messages as the demo's user agents need them: parse what arrives, build what is sent,
and answer a digest challenge (RFC 3261, RFC 2617/7616 with ``qop=auth``).

Deliberately small: no compact forms beyond the usual ones, no multipart bodies, no header
folding on output. Anything that cannot be read raises ``SipParseError`` (the endpoint logs
it and goes on).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

CRLF = "\r\n"
BRANCH_COOKIE = "z9hG4bK"
_COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Max-Forwards",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Expires",
        "Record-Route",
        "Route",
        "User-Agent",
        "Supported",
    )
}
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    401: "Unauthorized",
    407: "Proxy Authentication Required",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
}


class SipParseError(ValueError):
    """A datagram that is not a SIP message the demo can read."""


def canonical(name: str) -> str:
    """The usual spelling of a header name (compact forms expanded)."""
    stripped = name.strip()
    lowered = stripped.lower()
    if lowered in _COMPACT:
        return _COMPACT[lowered]
    return _CANONICAL.get(lowered, stripped)


@dataclass
class SipMessage:
    """A request (``method`` and ``uri`` set) or a response (``status`` set)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        wanted = canonical(name)
        return next((v for n, v in self.headers if n == wanted), None)

    def get_all(self, name: str) -> list[str]:
        wanted = canonical(name)
        return [v for n, v in self.headers if n == wanted]

    def header(self, name: str) -> str:
        """The first value of header ``name`` (``SipParseError`` when missing)."""
        value = self.get(name)
        if value is None:
            raise SipParseError(f"no {canonical(name)} header")
        return value

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header with one holding ``value``."""
        wanted = canonical(name)
        index = next((i for i, (n, _) in enumerate(self.headers) if n == wanted), None)
        self.headers = [(n, v) for n, v in self.headers if n != wanted]
        self.headers.insert(len(self.headers) if index is None else index, (wanted, value))

    @property
    def call_id(self) -> str:
        return self.header("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.header("CSeq").strip().partition(" ")
        try:
            return int(number), method.strip().upper()
        except ValueError:
            raise SipParseError(f"bad CSeq {self.header('CSeq')!r}") from None

    @property
    def branch(self) -> str:
        return param(self.header("Via"), "branch") or ""

    @property
    def from_tag(self) -> str:
        return param(self.header("From"), "tag") or ""

    @property
    def to_tag(self) -> str:
        return param(self.header("To"), "tag") or ""

    def encode(self) -> bytes:
        """The message on the wire, with its Content-Length computed."""
        start = (
            f"{self.method} {self.uri} SIP/2.0"
            if self.is_request
            else f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status, 'Unknown')}"
        )
        body = self.body.encode("utf-8")
        lines = [start]
        lines += [f"{n}: {v}" for n, v in self.headers if n != "Content-Length"]
        lines.append(f"Content-Length: {len(body)}")
        return (CRLF.join(lines) + CRLF + CRLF).encode("utf-8") + body


def parse(data: bytes) -> SipMessage:
    """Read one datagram (``SipParseError`` when it is not a SIP message)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("not UTF-8") from None
    head, separator, body = text.partition("\r\n\r\n")
    if not separator:
        head, separator, body = text.partition("\n\n")
        if not separator:
            raise SipParseError("no end of headers")
    lines = head.replace("\r\n", "\n").split("\n")
    message = _start_line(lines[0])
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and message.headers:  # folded continuation
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad header line {line[:40]!r}")
        message.headers.append((canonical(name), value.strip()))
    length = message.get("Content-Length")
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            raise SipParseError(f"bad Content-Length {length!r}") from None
        raw = body.encode("utf-8")
        if size > len(raw):
            raise SipParseError("truncated body")
        body = raw[:size].decode("utf-8", "replace")
    message.body = body
    for required in ("Via", "Call-ID", "CSeq", "From", "To"):
        message.header(required)
    message.cseq  # noqa: B018 (validates it)
    return message


def _start_line(line: str) -> SipMessage:
    parts = line.strip().split(" ", 2)
    if len(parts) < 2:
        raise SipParseError(f"bad start line {line[:40]!r}")
    if parts[0] == "SIP/2.0":
        try:
            status = int(parts[1])
        except ValueError:
            raise SipParseError(f"bad status {parts[1][:10]!r}") from None
        if not 100 <= status <= 699:
            raise SipParseError(f"bad status {status}")
        return SipMessage(status=status, reason=parts[2] if len(parts) > 2 else "")
    if len(parts) != 3 or parts[2] != "SIP/2.0":
        raise SipParseError(f"bad request line {line[:40]!r}")
    if not re.fullmatch(r"[A-Za-z]+", parts[0]):
        raise SipParseError(f"bad method {parts[0][:20]!r}")
    return SipMessage(method=parts[0].upper(), uri=parts[1])


_PARAM = re.compile(r';\s*([A-Za-z0-9._~+-]+)\s*(?:=\s*("[^"]*"|[^;,\s]*))?')


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header value (after any ``<...>``)."""
    tail = value[value.rfind(">") + 1 :] if ">" in value else value
    for match in _PARAM.finditer(tail):
        if match.group(1).lower() == name.lower():
            return (match.group(2) or "").strip('"')
    return None


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"Bob" <sip:b@h>;tag=x`` -> ``sip:b@h``) or addr-spec."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def user_of(uri: str) -> str:
    """The user part of a SIP URI (``sip:1001@h:5060`` -> ``1001``)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0] if "@" in rest else ""


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


def request(
    method: str,
    uri: str,
    *,
    via_host: str,
    via_port: int,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    branch: str | None = None,
    contact: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: str = "",
) -> SipMessage:
    """A request with the headers every request needs (a new branch unless given)."""
    headers = [
        ("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={branch or new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", from_),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact:
        headers.append(("Contact", contact))
    headers.append(("User-Agent", "plateau-demo"))
    headers += extra or []
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return SipMessage(method=method, uri=uri, headers=headers, body=body)


def response(
    req: SipMessage,
    status: int,
    *,
    to_tag: str = "",
    contact: str | None = None,
    body: str = "",
    reason: str = "",
) -> SipMessage:
    """A response to ``req`` (RFC 3261 §8.2.6: Vias, From, Call-ID, CSeq copied; To tagged)."""
    headers = [(n, v) for n, v in req.headers if n == "Via"]
    to = req.header("To")
    if to_tag and param(to, "tag") is None:
        to = f"{to};tag={to_tag}"
    headers += [
        ("From", req.header("From")),
        ("To", to),
        ("Call-ID", req.call_id),
        ("CSeq", req.header("CSeq")),
    ]
    if contact:
        headers.append(("Contact", contact))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return SipMessage(status=status, reason=reason, headers=headers, body=body)


def ack_for_failure(invite: SipMessage, final: SipMessage) -> SipMessage:
    """The ACK of a non-2xx final response: same branch and Request-URI as the INVITE
    (RFC 3261 §17.1.1.3), the response's To."""
    number, _ = invite.cseq
    return SipMessage(
        method="ACK",
        uri=invite.uri,
        headers=[
            ("Via", invite.header("Via")),
            ("Max-Forwards", "70"),
            ("From", invite.header("From")),
            ("To", final.header("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{number} ACK"),
        ],
    )


def cancel_for(invite: SipMessage) -> SipMessage:
    """The CANCEL of a pending INVITE (RFC 3261 §9.1: same branch, URI, From, To, Call-ID)."""
    number, _ = invite.cseq
    return SipMessage(
        method="CANCEL",
        uri=invite.uri,
        headers=[
            ("Via", invite.header("Via")),
            ("Max-Forwards", "70"),
            ("From", invite.header("From")),
            ("To", invite.header("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{number} CANCEL"),
        ],
    )


def sdp(host: str, port: int, session: int | None = None) -> str:
    """A one-stream G.711 offer/answer (no RTP is ever sent: the demo carries no media)."""
    sid = session if session is not None else secrets.randbelow(2**31)
    return CRLF.join(
        [
            "v=0",
            f"o=plateau-demo {sid} {sid} IN IP4 {host}",
            "s=-",
            f"c=IN IP4 {host}",
            "t=0 0",
            f"m=audio {port} RTP/AVP 8 0 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=sendrecv",
            "",
        ]
    )


# -- digest ------------------------------------------------------------------------------


_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate``/``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: str = ""
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> Challenge:
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            raise SipParseError(f"not a Digest challenge: {scheme!r}")
        fields = {
            m.group(1).lower(): m.group(2).strip('"')
            for m in re.finditer(r'([A-Za-z-]+)\s*=\s*("[^"]*"|[^,\s]+)', rest)
        }
        if "realm" not in fields or "nonce" not in fields:
            raise SipParseError("a Digest challenge without realm or nonce")
        return cls(
            realm=fields["realm"],
            nonce=fields["nonce"],
            algorithm=fields.get("algorithm", "MD5").upper(),
            qop=fields.get("qop", ""),
            opaque=fields.get("opaque"),
        )


def choose_challenge(values: list[str]) -> Challenge:
    """The strongest challenge we can answer (SHA-256, else MD5)."""
    readable = []
    for value in values:
        try:
            readable.append(Challenge.parse(value))
        except SipParseError:
            continue
    usable = [c for c in readable if c.algorithm in _HASHES]
    if not usable:
        raise SipParseError("no Digest challenge with MD5 or SHA-256")
    return max(usable, key=lambda c: c.algorithm == "SHA-256")


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The ``Authorization`` value answering ``challenge`` (``qop=auth`` when offered)."""
    h = _HASHES[challenge.algorithm]

    def digest(text: str) -> str:
        return h(text.encode("utf-8")).hexdigest()

    ha1 = digest(f"{username}:{challenge.realm}:{password}")
    ha2 = digest(f"{method}:{uri}")
    parts = [
        f'username="{username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f"algorithm={challenge.algorithm}",
    ]
    qops = [q.strip() for q in challenge.qop.split(",") if q.strip()]
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        count = f"{nc:08x}"
        answer = digest(f"{ha1}:{challenge.nonce}:{count}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        answer = digest(f"{ha1}:{challenge.nonce}:{ha2}")
    parts.append(f'response="{answer}"')
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)
