"""Cutting SIP messages out of a stream transport (TCP, TLS) by Content-Length.

RFC 3261 §18.3: over a stream, Content-Length is the only way to find where a message
ends, so a missing-but-needed, malformed or oversized one leaves the rest of the stream
meaningless. ``StreamFramer`` then raises ``FramingError`` and the connection must be
closed. CRLFs between messages are skipped; a double CRLF is an RFC 5626 keep-alive ping.
"""

from __future__ import annotations

from collections.abc import Callable

from plateau_sip_gateway.sip.parser import MAX_MESSAGE_SIZE

_CONTENT_LENGTH_NAMES = (b"content-length", b"l")


class FramingError(Exception):
    """The stream cannot be cut into messages any more: close the connection.

    ``status`` is what a response would say (400 malformed Content-Length, 513 too large).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class StreamFramer:
    """Incremental framer: ``feed`` it bytes as they arrive, get back whole messages.

    Each returned ``bytes`` is exactly one message (head and Content-Length bytes of
    body) for ``parse``. A message without Content-Length is taken to have no body.
    ``on_ping`` is called for every double-CRLF keep-alive, which the transport answers
    with a single CRLF (RFC 5626 §3.5.1).
    """

    def __init__(
        self,
        max_message_size: int = MAX_MESSAGE_SIZE,
        on_ping: Callable[[], None] | None = None,
    ) -> None:
        self._max = max_message_size
        self._on_ping = on_ping
        self._buffer = bytearray()
        self._scan_from = 0
        self._needed: int | None = None
        self._crlfs = 0
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``; raises FramingError (then and on every
        later call) once the stream cannot be framed."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        pos = 0
        try:
            while True:
                if self._needed is None:
                    pos = self._skip_keepalives(pos)
                    if pos >= len(buffer) or (len(buffer) - pos == 1 and buffer[pos] == 13):
                        break
                    self._crlfs = 0
                    end = buffer.find(b"\r\n\r\n", max(pos, self._scan_from))
                    if end < 0:
                        if len(buffer) - pos > self._max:
                            raise FramingError(f"no end of headers within {self._max} bytes", 513)
                        self._scan_from = max(pos, len(buffer) - 3)
                        break
                    total = end + 4 - pos + _content_length(bytes(buffer[pos:end]))
                    if total > self._max:
                        raise FramingError(
                            f"message of {total} bytes is larger than {self._max} bytes", 513
                        )
                    self._needed = total
                needed = self._needed
                if len(buffer) - pos < needed:
                    break
                messages.append(bytes(buffer[pos : pos + needed]))
                pos += needed
                self._needed = None
                self._scan_from = pos
        except FramingError as exc:
            self._error = exc
            self._buffer = bytearray()
            raise
        del buffer[:pos]
        self._scan_from = max(0, self._scan_from - pos)
        return messages

    def _skip_keepalives(self, pos: int) -> int:
        buffer = self._buffer
        while buffer.startswith(b"\r\n", pos):
            pos += 2
            self._crlfs += 1
            if self._crlfs == 2:
                self._crlfs = 0
                if self._on_ping is not None:
                    self._on_ping()
        return pos


def _content_length(head: bytes) -> int:
    """The Content-Length of a message head (0 when absent)."""
    lines = head.split(b"\r\n")
    found: int | None = None
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        colon = line.find(b":")
        if colon <= 0 or line[:colon].rstrip(b" \t").lower() not in _CONTENT_LENGTH_NAMES:
            continue
        raw = line[colon + 1 :]
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            raw += b" " + lines[i]
            i += 1
        if found is not None:
            raise FramingError("more than one Content-Length header")
        raw = raw.strip(b" \t")
        if not raw.isdigit():
            raise FramingError(f"invalid Content-Length: {raw[:20]!r}")
        significant = raw.lstrip(b"0")
        if len(significant) > 10:
            raise FramingError("Content-Length is far too large", 513)
        found = int(significant) if significant else 0
    return 0 if found is None else found
