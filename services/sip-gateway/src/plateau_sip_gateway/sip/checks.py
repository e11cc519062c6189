"""What a UAS checks in a well-formed request before acting on it (RFC 3261 §8.2).

Parsing proves a message is SIP; these checks decide whether this element can serve it:
the method (501), the Request-URI scheme (416), Max-Forwards for a proxy (483), required
extensions (420), the body's type and encoding (415), the Accept of an INVITE (406) and
REGISTER's own rules (400). They depend on what the element supports, hence the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from plateau_sip_gateway.sip.body import find_part
from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.grammar import TOKEN_RE, parse_params
from plateau_sip_gateway.sip.message import SipRequest, SipResponse
from plateau_sip_gateway.sip.uri import SipUri
from plateau_sip_gateway.sip.values import MediaType


@dataclass(frozen=True)
class UasPolicy:
    """What this element understands.

    ``methods``: methods it implements (others get 501 with Allow). ``uri_schemes``:
    Request-URI schemes served. ``extensions``: option tags it
    implements (for Require). ``body_types``/``body_encodings``: request bodies it can
    read. ``answer_types``: what it puts in the body of an answer to INVITE (checked
    against Accept). ``proxy``: apply the proxy rules (Max-Forwards 0 → 483,
    Proxy-Require) instead of the UAS ones.
    """

    methods: frozenset[str] = frozenset(
        {
            "ACK",
            "BYE",
            "CANCEL",
            "INFO",
            "INVITE",
            "MESSAGE",
            "NOTIFY",
            "OPTIONS",
            "PRACK",
            "REFER",
            "REGISTER",
            "SUBSCRIBE",
            "UPDATE",
        }
    )
    uri_schemes: frozenset[str] = frozenset({"sip", "sips"})
    extensions: frozenset[str] = frozenset()
    body_types: frozenset[str] = frozenset({"application/sdp"})
    body_encodings: frozenset[str] = frozenset({"identity"})
    answer_types: frozenset[str] = frozenset({"application/sdp"})
    proxy: bool = False


DEFAULT_POLICY = UasPolicy()


@dataclass(frozen=True)
class Rejection:
    """Why a request is refused: the status to answer, a human explanation, and the
    headers the response must carry (Unsupported for 420, Accept for 415...)."""

    status: int
    detail: str
    headers: tuple[tuple[str, str], ...] = field(default=())

    def create_response(self, request: SipRequest, to_tag: str | None = None) -> SipResponse:
        return request.create_response(self.status, to_tag=to_tag, headers=self.headers)


def check_request(request: SipRequest, policy: UasPolicy = DEFAULT_POLICY) -> Rejection | None:
    """The response refusing ``request``, or None when this element can go on with it.

    ACK is never answered, so it is never refused here. A header this needs that turns
    out to be malformed (Accept, Require...) is refused with 400.
    """
    try:
        return _check(request, policy)
    except SipParseError as exc:
        return Rejection(400, exc.reason)


def _check(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    if request.method == "ACK":
        return None
    checks = _PROXY_CHECKS if policy.proxy else _UAS_CHECKS
    for check in checks:
        rejection = check(request, policy)
        if rejection is not None:
            return rejection
    return None


def _check_method(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    if request.method in policy.methods:
        return None
    return Rejection(
        501,
        f"method {request.method!r} is not implemented",
        (("Allow", ", ".join(sorted(policy.methods))),),
    )


def _check_scheme(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    scheme = request.uri.scheme.lower()
    if scheme in policy.uri_schemes:
        return None
    return Rejection(416, f"Request-URI scheme {scheme!r} is not supported")


def _check_max_forwards(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    # RFC 3261 §16.3 step 2 lets a proxy answer an OPTIONS itself instead; whoever wants
    # that checks for OPTIONS first, since None here means "forward it".
    if request.max_forwards == 0:
        return Rejection(483, "Max-Forwards reached 0")
    return None


def _check_proxy_require(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    return _unsupported(request.proxy_require, policy.extensions)


def _check_require(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    # RFC 3261 §8.2.2.3: Require is not applied to CANCEL (nor to ACK).
    if request.method == "CANCEL":
        return None
    return _unsupported(request.require, policy.extensions)


def _check_accept(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    accept = request.accept
    if request.method != "INVITE" or accept is None or not policy.answer_types:
        return None
    if any(r.matches(t) for r in accept for t in policy.answer_types):
        return None
    return Rejection(
        406,
        "Accept allows none of the body types an answer carries",
        (("Warning", '399 - "' + ", ".join(sorted(policy.answer_types)) + '"'),),
    )


def _unsupported(required: Iterable[str], supported: frozenset[str]) -> Rejection | None:
    missing = [tag for tag in required if tag not in supported]
    if not missing:
        return None
    return Rejection(
        420,
        "unsupported extensions required: " + ", ".join(missing),
        tuple(("Unsupported", tag) for tag in missing),
    )


def _check_body(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    if not request.body:
        return None
    content_type = request.content_type
    if content_type is None:
        return Rejection(400, "a body without Content-Type")
    encodings = [e.lower() for e in request.headers.get_all("Content-Encoding") if e]
    unknown = [e for e in encodings if e not in policy.body_encodings]
    if unknown:
        return Rejection(
            415,
            "unsupported Content-Encoding: " + ", ".join(unknown),
            (("Accept-Encoding", ", ".join(sorted(policy.body_encodings))),),
        )
    if _optional_body(request) or _understood(request.body, content_type, policy):
        return None
    return Rejection(
        415,
        f"unsupported Content-Type {content_type.mime}",
        (("Accept", ", ".join(sorted(policy.body_types))),),
    )


def _understood(body: bytes, content_type: MediaType, policy: UasPolicy) -> bool:
    try:
        return any(find_part(body, content_type, mime) is not None for mime in policy.body_types)
    except SipParseError:
        return False


def _optional_body(request: SipRequest) -> bool:
    """Whether Content-Disposition says the body may be ignored (``handling=optional``)."""
    value = request.headers.get("Content-Disposition")
    if value is None:
        return False
    m = TOKEN_RE.match(value)
    if m is None:
        return False
    try:
        params = parse_params(value, m.end(), "Content-Disposition")
    except SipParseError:
        return False
    return (params.get("handling") or "").lower() == "optional"


def _check_register(request: SipRequest, policy: UasPolicy) -> Rejection | None:
    if request.method != "REGISTER":
        return None
    if not isinstance(request.to.uri, SipUri):
        return Rejection(400, "the To of a REGISTER must be a SIP or SIPS address of record")
    if request.is_contact_wildcard and request.expires != 0:
        return Rejection(400, "Contact: * requires Expires: 0")
    return None


_Check = Callable[[SipRequest, UasPolicy], Rejection | None]
_UAS_CHECKS: tuple[_Check, ...] = (
    _check_method,
    _check_scheme,
    _check_require,
    _check_body,
    _check_accept,
    _check_register,
)
_PROXY_CHECKS: tuple[_Check, ...] = (_check_scheme, _check_max_forwards, _check_proxy_require)
