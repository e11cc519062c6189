"""Parsing SIP messages from bytes, with the checks every UAS makes before using one.

``parse`` accepts one message: a UDP datagram or one message cut from a stream by
``StreamFramer``. It raises ``SipParseError`` for anything RFC 3261 does not allow, and
that error says whether a response can be sent and which.
"""

from __future__ import annotations

import re
from typing import Any

from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.grammar import is_token
from plateau_sip_gateway.sip.headers import _NAMES, LIST_HEADERS, Headers, split_list
from plateau_sip_gateway.sip.message import SipRequest, SipResponse, _prime
from plateau_sip_gateway.sip.uri import SipUri, Uri, parse_uri
from plateau_sip_gateway.sip.values import (
    MAX_UINT32,
    parse_call_id,
    parse_cseq,
    parse_date,
    parse_media_type,
    parse_name_addr,
    parse_uint,
    parse_via,
    via_sent_by,
)

MAX_MESSAGE_SIZE = 65_536
"""The largest message accepted, in bytes (start line, headers and body); larger gets 513."""
MAX_HEADER_FIELDS = 512
"""The most header fields (list elements counted one by one) a message may have: far more
than any real one (a Via per hop is at most 256), few enough to bound the work a hostile
message costs."""

_LEADING_CRLF_RE = re.compile(rb"(?:\r\n)*+")
_SIP_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_STATUS_CODE_RE = re.compile(r"[1-6][0-9][0-9]")
_CSEQ_SHAPE_RE = re.compile(r"[0-9]+[ \t]+[A-Za-z0-9\-.!%*_+`'~]+")

# Headers RFC 3261 allows once per message; a second one makes the message ambiguous.
_SINGLE = (
    "from",
    "to",
    "call-id",
    "cseq",
    "max-forwards",
    "content-type",
    "expires",
    "date",
)
_REQUIRED = ("from", "to", "call-id", "cseq")
_NAME_ADDR_LISTS = (("contact", "Contact"), ("route", "Route"), ("record-route", "Record-Route"))


def parse(data: bytes) -> SipRequest | SipResponse:
    """One SIP message from ``data``.

    Over UDP, bytes beyond Content-Length are ignored and a body shorter than it is an
    error; without Content-Length the body is the rest of the datagram. Raises
    ``SipParseError`` for anything malformed or missing that a UAS must reject.
    """
    try:
        return _parse(data)
    except SipParseError as exc:
        raise _with_response_info(exc, data) from None


def parse_headers(block: bytes) -> Headers:
    """Header fields from a block of ``Name: value`` lines (a MIME part's headers)."""
    if not block:
        return Headers()
    fields, _, _ = _header_fields(block.decode("utf-8", "surrogateescape"), 0)
    return Headers._trusted(fields)


def _parse(data: bytes) -> SipRequest | SipResponse:
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(
            f"message of {len(data)} bytes is larger than {MAX_MESSAGE_SIZE} bytes", 513
        )
    start = _skip_crlfs(data)
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("the header section does not end with an empty line")
    head = data[start:end]
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        raise SipParseError("bare CR or LF in the header section")
    text = head.decode("utf-8", "surrogateescape")
    line_end = text.find("\r\n")
    first = text if line_end < 0 else text[:line_end]
    fields: tuple[tuple[str, str, str], ...] = ()
    index: dict[str, list[str]] = {}
    lengths: list[str] = []
    if line_end >= 0:
        fields, index, lengths = _header_fields(text, line_end + 2)
    headers = Headers._trusted(fields, {k: tuple(v) for k, v in index.items()})
    body = _body(data, end + 4, lengths)
    if first[:4].upper() == "SIP/":
        status, reason = _status_line(first)
        views = _typed_views(index)
        response = SipResponse(status, reason, headers, body)
        _prime(response, views)
        return response
    method, uri = _request_line(first)
    views = _typed_views(index)
    if views["cseq"].method != method:
        raise SipParseError(
            f"CSeq method {views['cseq'].method!r} does not match request method {method!r}"
        )
    request = SipRequest(method, uri, headers, body)
    _prime(request, views)
    return request


def _skip_crlfs(data: bytes) -> int:
    """Where the start line begins: RFC 3261 §7.5 ignores CRLFs before it."""
    m = _LEADING_CRLF_RE.match(data)
    return 0 if m is None else m.end()


def _body(data: bytes, start: int, lengths: list[str]) -> bytes:
    """The body: Content-Length bytes after the head (extra datagram bytes are ignored),
    or all of them when there is no Content-Length."""
    if not lengths:
        return data[start:]
    if len(lengths) > 1:
        raise SipParseError("more than one Content-Length header")
    length = parse_uint(lengths[0], MAX_UINT32, "Content-Length")
    available = len(data) - start
    if length > available:
        raise SipParseError(
            f"the body is shorter ({available} bytes) than Content-Length ({length})"
        )
    return data[start : start + length]


def _header_fields(
    text: str, pos: int
) -> tuple[tuple[tuple[str, str, str], ...], dict[str, list[str]], list[str]]:
    """(fields, values by key, Content-Length values) of the header lines from ``pos``.

    Folded lines are unfolded into one SP; Content-Length is set apart (the encoder
    computes it from the body).
    """
    block = text[pos:]
    if block[:1] in (" ", "\t"):
        raise SipParseError("the first header line starts with whitespace")
    lines = _unfold(block) if "\r\n " in block or "\r\n\t" in block else block.split("\r\n")
    if len(lines) > MAX_HEADER_FIELDS:
        raise SipParseError(f"more than {MAX_HEADER_FIELDS} header fields")
    lists = LIST_HEADERS
    known_name = _NAMES.get
    fields: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    lengths: list[str] = []
    for line in lines:
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(f"header line without a name and colon: {line[:60]!r}")
        name = line[:colon]
        key, canonical = known_name(name.lower()) or _field_name(name)
        value = line[colon + 1 :].strip(" \t")
        if key == "content-length":
            lengths.append(value)
            continue
        values = index.get(key)
        if values is None:
            values = index[key] = []
        if key in lists and "," in value:
            for element in split_list(value):
                fields.append((key, canonical, element))
                values.append(element)
        else:
            fields.append((key, canonical, value))
            values.append(value)
    if len(fields) > MAX_HEADER_FIELDS:
        raise SipParseError(f"more than {MAX_HEADER_FIELDS} header fields")
    return tuple(fields), index, lengths


def _unfold(block: str) -> list[str]:
    """The logical lines of a header block: a line starting with SP or HTAB continues the
    one before, and the folding whitespace around the line break becomes one SP."""
    logical: list[list[str]] = []
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t") and logical:
            logical[-1].append(line)
        else:
            logical.append([line])
    return [
        lines[0]
        if len(lines) == 1
        else " ".join([lines[0].rstrip(" \t"), *filter(None, (p.strip(" \t") for p in lines[1:]))])
        for lines in logical
    ]


def _field_name(name: str) -> tuple[str, str]:
    if name[-1] in " \t":
        name = name.rstrip(" \t")
    known = _NAMES.get(name.lower())
    if known is not None:
        return known
    if not is_token(name):
        raise SipParseError(f"invalid header name: {name[:60]!r}")
    return name.lower(), name


def _status_line(line: str) -> tuple[int, str]:
    parts = line.split(" ", 2)
    if parts[0].upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version in status line: {parts[0][:20]!r}", 505)
    if len(parts) < 2 or _STATUS_CODE_RE.fullmatch(parts[1]) is None:
        raise SipParseError(f"malformed status line: {line[:80]!r}")
    return int(parts[1]), parts[2] if len(parts) == 3 else ""


def _request_line(line: str) -> tuple[str, Uri]:
    parts = line.split(" ")
    if len(parts) == 3 and parts[2].upper() != "SIP/2.0" and _SIP_VERSION_RE.fullmatch(parts[2]):
        raise SipParseError(f"unsupported SIP version {parts[2]!r}", 505)
    if len(parts) != 3 or not all(parts):
        raise SipParseError(
            f"request line must be 'Method SP Request-URI SP SIP/2.0': {line[:80]!r}"
        )
    method, uri_text, version = parts
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"not a SIP/2.0 request line: {line[:80]!r}")
    if not is_token(method):
        raise SipParseError(f"invalid method: {method[:40]!r}")
    try:
        uri = parse_uri(uri_text)
    except SipParseError as exc:
        raise SipParseError(f"bad Request-URI: {exc.reason}") from None
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError("the Request-URI must not carry URI headers (?name=value)")
    return method, uri


def _typed_views(index: dict[str, list[str]]) -> dict[str, Any]:
    """Parse and check the headers the transaction and dialog layers rely on."""
    for key in _SINGLE:
        values = index.get(key)
        if values is not None and len(values) > 1:
            raise SipParseError(f"more than one {_NAMES[key][1]} header")
    vias = index.get("via")
    if not vias:
        raise SipParseError("missing Via header")
    missing = [key for key in _REQUIRED if key not in index]
    if missing:
        names = ", ".join(_NAMES[key][1] for key in missing)
        raise SipParseError(f"missing {names} header(s)")
    views: dict[str, Any] = {
        "vias": tuple(parse_via(v) for v in vias),
        "from_": parse_name_addr(index["from"][0], "From"),
        "to": parse_name_addr(index["to"][0], "To"),
        "call_id": parse_call_id(index["call-id"][0]),
        "cseq": parse_cseq(index["cseq"][0]),
    }
    value = index.get("max-forwards")
    views["max_forwards"] = None if value is None else parse_uint(value[0], 255, "Max-Forwards")
    value = index.get("content-type")
    views["content_type"] = None if value is None else parse_media_type(value[0])
    value = index.get("expires")
    views["expires"] = None if value is None else parse_uint(value[0], MAX_UINT32, "Expires")
    value = index.get("date")
    views["date"] = None if value is None else parse_date(value[0])
    for key, name in _NAME_ADDR_LISTS:
        values = index.get(key)
        if not values:
            views[key.replace("-", "_") + "s"] = ()
        elif key == "contact" and "*" in values:
            if len(values) > 1:
                raise SipParseError("Contact: * cannot be combined with other contacts")
            views["contacts"] = ()
        else:
            views[key.replace("-", "_") + "s"] = tuple(parse_name_addr(v, name) for v in values)
    return views


def _with_response_info(exc: SipParseError, data: bytes) -> SipParseError:
    """``exc`` completed with whether a response can be sent and the headers to copy.

    This reads the header lines again, leniently: the fault may be anywhere, and an error
    response only needs the top Via (where to send it) and CSeq (what it answers).
    """
    head = data[:MAX_MESSAGE_SIZE]
    start = _skip_crlfs(head)
    end = head.find(b"\r\n\r\n", start)
    text = head[start : end if end >= 0 else len(head)].decode("utf-8", "surrogateescape")
    lines = _unfold(text)
    method = lines[0].split(" ", 1)[0]
    if lines[0][:4].upper() == "SIP/" or method == "ACK" or not is_token(method):
        return exc.with_response(False, ())
    copied: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        known = _NAMES.get(name.rstrip(" \t").lower())
        if not colon or known is None or "\r" in value or "\n" in value:
            continue
        if known[0] in ("via", "from", "to", "call-id", "cseq"):
            copied.setdefault(known[1], []).append(value.strip(" \t"))
    vias = copied.get("Via", [])
    cseq = copied.get("CSeq", [])
    can_respond = (
        bool(vias)
        and via_sent_by(split_list(vias[0])[0])
        and bool(cseq)
        and _CSEQ_SHAPE_RE.fullmatch(cseq[0]) is not None
    )
    if not can_respond:
        return exc.with_response(False, ())
    fields = [("Via", v) for v in vias]
    fields.extend(
        (name, copied[name][0]) for name in ("From", "To", "Call-ID", "CSeq") if name in copied
    )
    return exc.with_response(True, tuple(fields))
