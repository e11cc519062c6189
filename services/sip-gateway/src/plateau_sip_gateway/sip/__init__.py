"""The SIP message layer: parse, inspect, build and encode RFC 3261 messages.

Pure code (no sockets, no event loop) on which the transaction, transport, registrar and
B2BUA layers are built::

    message = parse(datagram)            # SipRequest | SipResponse, or SipParseError
    message.top_via.branch, message.cseq.method, message.to.tag
    reply = message.create_response(180, to_tag=tag)
    transport.send(reply.encode())
"""

from plateau_sip_gateway.sip.body import BodyPart, find_body, find_part, split_multipart
from plateau_sip_gateway.sip.checks import DEFAULT_POLICY, Rejection, UasPolicy, check_request
from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.framing import FramingError, StreamFramer
from plateau_sip_gateway.sip.grammar import Params, quote, unquote
from plateau_sip_gateway.sip.headers import COMPACT_FORMS, Headers, canonical_name
from plateau_sip_gateway.sip.message import (
    REASON_PHRASES,
    SipMessage,
    SipRequest,
    SipResponse,
    reason_phrase,
)
from plateau_sip_gateway.sip.parser import (
    MAX_HEADER_FIELDS,
    MAX_MESSAGE_SIZE,
    parse,
    parse_headers,
)
from plateau_sip_gateway.sip.uri import (
    AbsoluteUri,
    SipUri,
    Uri,
    escape_user,
    parse_sip_uri,
    parse_uri,
    unescape,
)
from plateau_sip_gateway.sip.values import (
    BRANCH_MAGIC_COOKIE,
    AuthValue,
    CSeq,
    MediaType,
    NameAddr,
    RetryAfter,
    Via,
    format_date,
    parse_auth,
    parse_media_type,
    parse_name_addr,
    parse_via,
)

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "COMPACT_FORMS",
    "DEFAULT_POLICY",
    "MAX_HEADER_FIELDS",
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "AbsoluteUri",
    "AuthValue",
    "BodyPart",
    "CSeq",
    "FramingError",
    "Headers",
    "MediaType",
    "NameAddr",
    "Params",
    "Rejection",
    "RetryAfter",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "StreamFramer",
    "UasPolicy",
    "Uri",
    "Via",
    "canonical_name",
    "check_request",
    "escape_user",
    "find_body",
    "find_part",
    "format_date",
    "parse",
    "parse_auth",
    "parse_headers",
    "parse_media_type",
    "parse_name_addr",
    "parse_sip_uri",
    "parse_uri",
    "parse_via",
    "quote",
    "reason_phrase",
    "split_multipart",
    "unescape",
    "unquote",
]
