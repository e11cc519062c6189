"""The error raised for a SIP message that cannot be accepted, and what to answer to it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plateau_sip_gateway.sip.message import SipResponse

_TAG_PARAM = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


class SipParseError(ValueError):
    """A message that is not acceptable SIP: why, and whether and how to answer it.

    ``status`` is the response code a UAS sends (400 unless the fault calls for another:
    505 for a SIP version other than 2.0, 513 for an oversized message). ``can_respond`` is
    true only for a request (never an ACK) whose top Via and CSeq were understood well
    enough to address a response; the transport then sends ``create_response()`` and
    otherwise drops the message silently.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        *,
        can_respond: bool = False,
        response_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.can_respond = can_respond
        self._response_headers = response_headers

    def __repr__(self) -> str:
        return (
            f"SipParseError({self.reason!r}, status={self.status}, can_respond={self.can_respond})"
        )

    def with_response(
        self, can_respond: bool, response_headers: tuple[tuple[str, str], ...]
    ) -> SipParseError:
        """The same fault, now knowing whether (and with which headers) to answer it."""
        return SipParseError(
            self.reason,
            self.status,
            can_respond=can_respond,
            response_headers=response_headers,
        )

    def create_response(self, to_tag: str | None = None) -> SipResponse:
        """The error response to send back (Via, From, To, Call-ID and CSeq copied as received).

        Raises ``ValueError`` when ``can_respond`` is false: such messages are dropped.
        """
        if not self.can_respond:
            raise ValueError(f"no response can be sent for this message: {self.reason}")
        from plateau_sip_gateway.sip.headers import Headers
        from plateau_sip_gateway.sip.message import SipResponse, reason_phrase

        fields: list[tuple[str, str]] = []
        for name, value in self._response_headers:
            tagged = name == "To" and to_tag is not None and not _TAG_PARAM.search(value)
            fields.append((name, f"{value};tag={to_tag}" if tagged else value))
        return SipResponse(self.status, reason_phrase(self.status), Headers(fields))
