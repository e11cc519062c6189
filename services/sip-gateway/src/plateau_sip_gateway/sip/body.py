"""Message bodies: the parts of a multipart body (RFC 2046 §5.1) and finding the SDP."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.headers import Headers
from plateau_sip_gateway.sip.message import SipMessage
from plateau_sip_gateway.sip.parser import parse_headers
from plateau_sip_gateway.sip.values import MediaType, parse_media_type

SDP = "application/sdp"
_DEFAULT_PART_TYPE = MediaType("text", "plain")
_MAX_NESTING = 4


@dataclass(frozen=True)
class BodyPart:
    """One part of a multipart body: its MIME headers and its content."""

    headers: Headers
    body: bytes

    @cached_property
    def content_type(self) -> MediaType:
        """The part's Content-Type (``text/plain`` when absent, as RFC 2046 says)."""
        value = self.headers.get("Content-Type")
        return _DEFAULT_PART_TYPE if value is None else parse_media_type(value)


def split_multipart(body: bytes, content_type: MediaType) -> tuple[BodyPart, ...]:
    """The parts of a ``multipart/*`` body, delimited by the Content-Type's boundary.

    The preamble and epilogue are ignored. Raises ``SipParseError`` when the boundary is
    missing from the Content-Type or the body is not delimited by it.
    """
    boundary = content_type.boundary
    if content_type.type.lower() != "multipart" or not boundary:
        raise SipParseError(f"not a multipart type with a boundary: {content_type}")
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    separator = b"\r\n" + delimiter
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        found = body.find(separator)
        if found < 0:
            raise SipParseError("multipart body without its boundary")
        pos = found + len(separator)
    parts: list[BodyPart] = []
    while not body.startswith(b"--", pos):
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise SipParseError("malformed multipart boundary line")
        start = line_end + 2
        following = body.find(separator, start)
        if following < 0:
            raise SipParseError("multipart body without its closing boundary")
        parts.append(_part(body[start:following]))
        pos = following + len(separator)
    return tuple(parts)


def _part(data: bytes) -> BodyPart:
    if data.startswith(b"\r\n"):
        return BodyPart(Headers(), data[2:])
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("multipart part without an empty line after its headers")
    return BodyPart(parse_headers(data[:end]), data[end + 4 :])


def find_body(message: SipMessage, mime: str = SDP) -> bytes | None:
    """The body of type ``mime`` (SDP by default): the whole body, or the first matching
    part of a multipart body (nested ones included); None when there is none."""
    content_type = message.content_type
    if content_type is None or not message.body:
        return None
    return find_part(message.body, content_type, mime)


def find_part(body: bytes, content_type: MediaType, mime: str) -> bytes | None:
    """``body`` itself when it is of type ``mime``, else its first part of that type
    (looking into nested multiparts); raises SipParseError for a malformed multipart."""
    return _find(body, content_type, mime.lower(), _MAX_NESTING)


def _find(body: bytes, content_type: MediaType, mime: str, depth: int) -> bytes | None:
    if content_type.mime == mime:
        return body
    if content_type.type.lower() != "multipart" or depth == 0:
        return None
    for part in split_multipart(body, content_type):
        found = _find(part.body, part.content_type, mime, depth - 1)
        if found is not None:
            return found
    return None
