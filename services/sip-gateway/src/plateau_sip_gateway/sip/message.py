"""SIP requests and responses: immutable values with typed views of their headers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Self

from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.grammar import is_token
from plateau_sip_gateway.sip.headers import Headers
from plateau_sip_gateway.sip.uri import Uri
from plateau_sip_gateway.sip.values import (
    MAX_UINT32,
    AuthValue,
    CSeq,
    MediaType,
    NameAddr,
    RetryAfter,
    Via,
    parse_auth,
    parse_call_id,
    parse_cseq,
    parse_date,
    parse_media_type,
    parse_name_addr,
    parse_retry_after,
    parse_token_list,
    parse_uint,
    parse_via,
)

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_CLASS_PHRASES = {
    1: "Provisional",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}

EMPTY_HEADERS = Headers()


def reason_phrase(status: int) -> str:
    """The usual reason phrase for ``status`` (its class's name for unregistered codes)."""
    return REASON_PHRASES.get(status) or _CLASS_PHRASES.get(status // 100, "Unknown")


class SipMessage(ABC):
    """What requests and responses share: headers, body, typed views and encoding.

    The typed views (``vias``, ``from_``, ``cseq``...) are computed once. On a message
    returned by ``parse`` they were checked while parsing and never raise; on a message
    built by hand from malformed values they raise ``SipParseError``.
    """

    headers: Headers
    body: bytes

    @abstractmethod
    def start_line(self) -> str:
        """The request line or status line, without CRLF."""

    @abstractmethod
    def _replace(self, headers: Headers, body: bytes) -> Self:
        """A copy with other headers and body."""

    def encode(self) -> bytes:
        """The message on the wire: canonical header names, one value per line and a
        Content-Length that is the length of the body."""
        lines = [self.start_line()]
        append = lines.append
        for key, name, value in self.headers._fields:
            if key != "content-length":
                append(f"{name}: {value}")
        append(f"Content-Length: {len(self.body)}\r\n\r\n")
        data = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return data + self.body if self.body else data

    def __bytes__(self) -> bytes:
        return self.encode()

    # typed views -------------------------------------------------------------------

    def _single(self, name: str) -> str:
        values = self.headers.get_all(name)
        if not values:
            raise SipParseError(f"missing {name} header")
        return values[0]

    def _optional(self, name: str) -> str | None:
        return self.headers.get(name)

    @cached_property
    def vias(self) -> tuple[Via, ...]:
        """Every Via value, the top (most recent hop) first."""
        return tuple(parse_via(v) for v in self.headers.get_all("Via"))

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via header")
        return vias[0]

    @cached_property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._single("From"), "From")

    @cached_property
    def to(self) -> NameAddr:
        return parse_name_addr(self._single("To"), "To")

    @cached_property
    def call_id(self) -> str:
        return parse_call_id(self._single("Call-ID"))

    @cached_property
    def cseq(self) -> CSeq:
        return parse_cseq(self._single("CSeq"))

    @cached_property
    def max_forwards(self) -> int | None:
        value = self._optional("Max-Forwards")
        return None if value is None else parse_uint(value, 255, "Max-Forwards")

    @property
    def content_length(self) -> int:
        """The length of the body (what Content-Length says once encoded)."""
        return len(self.body)

    @cached_property
    def content_type(self) -> MediaType | None:
        value = self._optional("Content-Type")
        return None if value is None else parse_media_type(value)

    @cached_property
    def expires(self) -> int | None:
        """The Expires header in seconds."""
        value = self._optional("Expires")
        return None if value is None else parse_uint(value, MAX_UINT32, "Expires")

    @cached_property
    def contacts(self) -> tuple[NameAddr, ...]:
        """The Contact values (empty for ``Contact: *``, see ``is_contact_wildcard``)."""
        values = self.headers.get_all("Contact")
        if values == ("*",):
            return ()
        return tuple(parse_name_addr(v, "Contact") for v in values)

    @property
    def is_contact_wildcard(self) -> bool:
        """Whether the message says ``Contact: *`` (a REGISTER removing all bindings)."""
        return self.headers.get_all("Contact") == ("*",)

    @cached_property
    def routes(self) -> tuple[NameAddr, ...]:
        return tuple(parse_name_addr(v, "Route") for v in self.headers.get_all("Route"))

    @cached_property
    def record_routes(self) -> tuple[NameAddr, ...]:
        return tuple(
            parse_name_addr(v, "Record-Route") for v in self.headers.get_all("Record-Route")
        )

    @cached_property
    def authorization(self) -> tuple[AuthValue, ...]:
        return tuple(parse_auth(v) for v in self.headers.get_all("Authorization"))

    @cached_property
    def proxy_authorization(self) -> tuple[AuthValue, ...]:
        return tuple(parse_auth(v) for v in self.headers.get_all("Proxy-Authorization"))

    @cached_property
    def www_authenticate(self) -> tuple[AuthValue, ...]:
        return tuple(parse_auth(v) for v in self.headers.get_all("WWW-Authenticate"))

    @cached_property
    def proxy_authenticate(self) -> tuple[AuthValue, ...]:
        return tuple(parse_auth(v) for v in self.headers.get_all("Proxy-Authenticate"))

    @cached_property
    def retry_after(self) -> RetryAfter | None:
        value = self._optional("Retry-After")
        return None if value is None else parse_retry_after(value)

    @property
    def supported(self) -> tuple[str, ...]:
        return parse_token_list(self.headers.get_all("Supported"))

    @property
    def require(self) -> tuple[str, ...]:
        return parse_token_list(self.headers.get_all("Require"))

    @property
    def proxy_require(self) -> tuple[str, ...]:
        return parse_token_list(self.headers.get_all("Proxy-Require"))

    @property
    def unsupported(self) -> tuple[str, ...]:
        return parse_token_list(self.headers.get_all("Unsupported"))

    @property
    def allow(self) -> tuple[str, ...]:
        return parse_token_list(self.headers.get_all("Allow"))

    @cached_property
    def accept(self) -> tuple[MediaType, ...] | None:
        """The Accept media ranges; None without an Accept header, () for an empty one."""
        values = self.headers.get_all("Accept")
        if not values:
            return None
        return tuple(parse_media_type(v) for v in values if v)

    @cached_property
    def date(self) -> datetime | None:
        value = self._optional("Date")
        return None if value is None else parse_date(value)

    # building ----------------------------------------------------------------------

    def with_header(self, name: str, value: str, *, first: bool = False) -> Self:
        """A copy with ``name: value`` added (see ``Headers.add``)."""
        return self._replace(self.headers.add(name, value, first=first), self.body)

    def without_header(self, name: str) -> Self:
        """A copy without any ``name`` field."""
        return self._replace(self.headers.remove(name), self.body)

    def with_replaced_header(self, name: str, *values: str) -> Self:
        """A copy whose ``name`` fields are ``values`` (none removes the header)."""
        return self._replace(self.headers.replace(name, *values), self.body)

    def with_top_via(self, via: Via | str) -> Self:
        """A copy with ``via`` pushed on top of the Via list (a request sent onwards)."""
        return self._replace(self.headers.add("Via", str(via), first=True), self.body)

    def without_top_via(self) -> Self:
        """A copy with the top Via removed (a response passed back down)."""
        return self._replace(self.headers.remove_first("Via"), self.body)

    def with_body(self, body: bytes, content_type: str | None) -> Self:
        """A copy carrying ``body`` of ``content_type`` (None removes Content-Type)."""
        headers = self.headers.remove("Content-Length")
        headers = (
            headers.replace("Content-Type", content_type)
            if content_type
            else headers.remove("Content-Type")
        )
        return self._replace(headers, body)


@dataclass(frozen=True, eq=True)
class SipRequest(SipMessage):
    """A SIP request. ``uri`` is the Request-URI."""

    method: str
    uri: Uri
    headers: Headers = field(default=EMPTY_HEADERS)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not is_token(self.method):
            raise ValueError(f"a SIP method must be a token: {self.method!r}")

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def _replace(self, headers: Headers, body: bytes) -> SipRequest:
        return SipRequest(self.method, self.uri, headers, body)

    def with_uri(self, uri: Uri) -> SipRequest:
        """A copy sent to another Request-URI."""
        return SipRequest(self.method, uri, self.headers, self.body)

    def with_decremented_max_forwards(self, default: int = 70) -> SipRequest:
        """A copy to forward: Max-Forwards minus one, or ``default`` when it had none
        (RFC 3261 §16.6 step 3). Raises ValueError at 0: answer 483 instead."""
        current = self.max_forwards
        if current == 0:
            raise ValueError("Max-Forwards is 0: answer 483 Too Many Hops instead")
        value = default if current is None else current - 1
        return self.with_replaced_header("Max-Forwards", str(value))

    def create_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        """A response to this request (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq
        copied, ``to_tag`` added to To unless it has one, Timestamp echoed in a 100,
        Record-Route copied into an INVITE's 1xx/2xx (§12.1.1)."""
        source = self.headers
        fields: list[tuple[str, str]] = [("Via", v) for v in source.get_all("Via")]
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = source.get(name)
            if value is None:
                continue
            if name == "To" and to_tag is not None and self.to.tag is None:
                value = f"{value};tag={to_tag}"
            fields.append((name, value))
        if status == 100:
            fields.extend(("Timestamp", v) for v in source.get_all("Timestamp"))
        elif self.method == "INVITE" and status < 300:
            # A response that establishes a dialog carries the request's Record-Route, in
            # order (§12.1.1): how the peer's in-dialog requests come back through proxies.
            fields.extend(("Record-Route", v) for v in source.get_all("Record-Route"))
        fields.extend(headers)
        return SipResponse(
            status, reason_phrase(status) if reason is None else reason, Headers(fields), body
        )


@dataclass(frozen=True, eq=True)
class SipResponse(SipMessage):
    """A SIP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default=EMPTY_HEADERS)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 699:
            raise ValueError(f"a SIP status code is 100-699, not {self.status}")
        if "\r" in self.reason or "\n" in self.reason:
            raise ValueError(f"a reason phrase cannot contain CR or LF: {self.reason!r}")

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def _replace(self, headers: Headers, body: bytes) -> SipResponse:
        return SipResponse(self.status, self.reason, headers, body)

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200


def _prime(message: SipMessage, views: dict[str, Any]) -> None:
    """Store typed views the parser has already computed, so they are not parsed twice."""
    message.__dict__.update(views)
