"""A SIP dialog as one side of it sees it: enough to send ACK and BYE and to recognise the
other side's BYE (RFC 3261 §12)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from plateau_demo.sip import SipMessage, new_branch, param, uri_of


@dataclass
class Dialog:
    """One established (or early) dialog; ``ended`` is set once either side said BYE."""

    call_id: str
    local: str  # our From/To value, with our tag
    remote: str  # theirs, with their tag
    remote_target: str  # where in-dialog requests go (their Contact)
    local_cseq: int
    via_host: str
    via_port: int
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def as_caller(cls, invite: SipMessage, ok: SipMessage, host: str, port: int) -> Dialog:
        """The dialog our INVITE made once ``ok`` (a 2xx) answered it."""
        number, _ = invite.cseq
        return cls(
            call_id=invite.call_id,
            local=invite.header("From"),
            remote=ok.header("To"),
            remote_target=uri_of(ok.get("Contact") or invite.uri),
            local_cseq=number,
            via_host=host,
            via_port=port,
        )

    @classmethod
    def as_callee(cls, invite: SipMessage, local_tag: str, host: str, port: int) -> Dialog:
        """The dialog we make by answering ``invite`` with ``local_tag``."""
        to = invite.header("To")
        local = to if param(to, "tag") else f"{to};tag={local_tag}"
        return cls(
            call_id=invite.call_id,
            local=local,
            remote=invite.header("From"),
            remote_target=uri_of(invite.get("Contact") or invite.header("From")),
            local_cseq=0,
            via_host=host,
            via_port=port,
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, param(self.local, "tag") or "")

    def request(self, method: str, *, cseq: int | None = None) -> SipMessage:
        """An in-dialog request (a new CSeq unless given, e.g. for the ACK of a 2xx)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        return SipMessage(
            method=method,
            uri=self.remote_target,
            headers=[
                ("Via", f"SIP/2.0/UDP {self.via_host}:{self.via_port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", self.local),
                ("To", self.remote),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
            ],
        )


def dialog_key(message: SipMessage, *, incoming: bool) -> tuple[str, str]:
    """The key of the dialog ``message`` belongs to, from our side: our tag is the To tag
    of a request we receive."""
    return (message.call_id, message.to_tag if incoming else message.from_tag)
