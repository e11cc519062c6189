"""The carrier of the demo trunk: subscribers calling the entry points (INVITE with SDP, ACK,
and a CANCEL when they lose patience), and the customers of the outbound campaign answering
(200 with the SDP offer), busy (486) or letting it ring until the dialer gives up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from dataclasses import dataclass

from plateau_demo import sip
from plateau_demo.dialog import Dialog, dialog_key
from plateau_demo.endpoint import Address, SipEndpoint
from plateau_demo.model import Outcome, TrafficModel, customer_numbers
from plateau_demo.sip import SipMessage

log = logging.getLogger(__name__)
MAX_CALL_S = 900.0  # a caller hangs up by himself after this long at the latest
UNANSWERED_S = 90.0  # a customer's phone stops ringing by itself


@dataclass
class _Ringing:
    invite: SipMessage
    source: Address
    tag: str
    cancelled: asyncio.Event


class Carrier:
    """The carrier's SIP side, on the address the demo trunk's outbound calls go to."""

    def __init__(
        self,
        model: TrafficModel,
        gateway: Address,
        dialled_numbers: list[str],
        rng: random.Random,
    ) -> None:
        self.model = model
        self.gateway = gateway
        self.dialled_numbers = dialled_numbers
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.endpoint: SipEndpoint | None = None
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._ringing: dict[tuple[str, str], _Ringing] = {}
        self._callers = customer_numbers(500, random.Random(rng.random()))
        self._calls: set[asyncio.Task[None]] = set()

    async def open(self, host: str, port: int) -> None:
        self.endpoint = await SipEndpoint.open("carrier", host, port, self._on_request)

    async def close(self) -> None:
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        await self._hang_up_all()
        if self.endpoint is not None:
            await self.endpoint.close()

    async def _hang_up_all(self) -> None:
        """Say BYE on every call still up, so the platform is left with no open call."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        byes = [
            endpoint.request(d.request("BYE"), self.gateway)
            for d in list(self._dialogs.values())
            if not d.ended.is_set()
        ]
        if byes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*byes, return_exceptions=True), 3.0)

    # -- inbound: subscribers calling ----------------------------------------------------

    async def run_arrivals(self, stop: asyncio.Event) -> None:
        """Place calls as the traffic model's arrivals say, until ``stop``."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        next_at = self.model.next_arrival(0.0)
        while not stop.is_set():
            delay = next_at - (loop.time() - began)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(delay, 1.0))
                continue
            task = asyncio.create_task(self.call(self.rng.choice(self.dialled_numbers)))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
            next_at = self.model.next_arrival(next_at)

    async def call(self, dnis: str) -> None:
        """One subscriber's call: ring, wait up to their patience, talk until BYE."""
        endpoint = self.endpoint
        assert endpoint is not None
        host, port = endpoint.host, endpoint.port
        caller = self.rng.choice(self._callers)
        gw_host, gw_port = self.gateway
        invite = sip.request(
            "INVITE",
            f"sip:{dnis}@{gw_host}:{gw_port}",
            via_host=host,
            via_port=port,
            from_=f"<sip:{caller}@{host}>;tag={sip.new_tag()}",
            to=f"<sip:{dnis}@{gw_host}>",
            call_id=sip.new_call_id(host),
            cseq=1,
            contact=f"<sip:{caller}@{host}:{port}>",
            body=sip.sdp(host, 40000 + 2 * self.rng.randrange(5000)),
        )
        self.counts["calls placed"] += 1
        patience = self.model.patience_s()
        pending = asyncio.ensure_future(endpoint.request(invite, self.gateway))
        try:
            done, _ = await asyncio.wait({pending}, timeout=patience)
            if not done:
                await endpoint.request(sip.cancel_for(invite), self.gateway)
            final = await pending
        except asyncio.CancelledError:
            if not pending.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        endpoint.request(sip.cancel_for(invite), self.gateway), 2.0
                    )
            pending.cancel()
            raise
        if final is None:
            self.counts["calls timed out"] += 1
            return
        if final.status >= 300:
            outcome = "abandoned" if final.status == 487 else f"refused ({final.status})"
            self.counts[f"calls {outcome}"] += 1
            return
        dialog = Dialog.as_caller(invite, final, host, port)
        endpoint.ack_2xx(dialog.request("ACK", cseq=1), self.gateway)
        self.counts["calls answered"] += 1
        await self._talk(dialog, MAX_CALL_S)

    async def _talk(self, dialog: Dialog, longest: float) -> None:
        """Hold the call until the other side's BYE, or say BYE after ``longest``."""
        endpoint = self.endpoint
        assert endpoint is not None
        self._dialogs[dialog.key] = dialog
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.ended.wait(), longest)
            if not dialog.ended.is_set():
                dialog.ended.set()
                await endpoint.request(dialog.request("BYE"), self.gateway)
        finally:
            self._dialogs.pop(dialog.key, None)

    # -- what the gateway sends ----------------------------------------------------------

    async def _on_request(self, message: SipMessage, source: Address) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        key = dialog_key(message, incoming=True)
        match message.method:
            case "INVITE" if not message.to_tag:
                await self._customer_rings(message, source)
            case "INVITE":  # a re-INVITE (hold, resume): accept it
                body = sip.sdp(endpoint.host, 40000 + 2 * self.rng.randrange(5000))
                contact = f"<sip:carrier@{endpoint.host}:{endpoint.port}>"
                endpoint.respond(
                    message, sip.response(message, 200, contact=contact, body=body), source
                )
            case "CANCEL":
                ringing = self._ringing.get((message.call_id, message.branch))
                endpoint.respond(message, sip.response(message, 200 if ringing else 481), source)
                if ringing is not None:
                    ringing.cancelled.set()
            case "BYE":
                dialog = self._dialogs.get(key)
                endpoint.respond(message, sip.response(message, 200 if dialog else 481), source)
                if dialog is not None:
                    dialog.ended.set()
            case "ACK":
                pass
            case "OPTIONS" | "NOTIFY":
                endpoint.respond(message, sip.response(message, 200), source)
            case _:
                endpoint.respond(
                    message, sip.response(message, 501, reason="Not Implemented"), source
                )

    async def _customer_rings(self, invite: SipMessage, source: Address) -> None:
        """An outbound call of the campaign reaches a (simulated) customer."""
        endpoint = self.endpoint
        assert endpoint is not None
        tag = sip.new_tag()
        contact = f"<sip:customer@{endpoint.host}:{endpoint.port}>"
        endpoint.respond(invite, sip.response(invite, 180, to_tag=tag, contact=contact), source)
        answer = self.model.customer_answer()
        ringing = _Ringing(invite, source, tag, asyncio.Event())
        ring_key = (invite.call_id, invite.branch)
        self._ringing[ring_key] = ringing
        self.counts["outbound calls received"] += 1
        try:
            ring_for = answer.ring_s if answer.outcome is not Outcome.NO_ANSWER else UNANSWERED_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ringing.cancelled.wait(), ring_for)
        finally:
            self._ringing.pop(ring_key, None)
        if ringing.cancelled.is_set():
            endpoint.respond(invite, sip.response(invite, 487, to_tag=tag), source)
            self.counts["outbound not answered"] += 1
            return
        if answer.outcome is Outcome.BUSY:
            endpoint.respond(invite, sip.response(invite, 486, to_tag=tag), source)
            self.counts["outbound busy"] += 1
            return
        if answer.outcome is Outcome.NO_ANSWER:
            endpoint.respond(invite, sip.response(invite, 480, to_tag=tag), source)
            self.counts["outbound not answered"] += 1
            return
        # RFC 3725 flow I: the gateway's INVITE has no SDP, so our 200 carries the offer.
        body = sip.sdp(endpoint.host, 40000 + 2 * self.rng.randrange(5000))
        ok = sip.response(invite, 200, to_tag=tag, contact=contact, body=body)
        endpoint.respond(invite, ok, source)
        self.counts["outbound answered"] += 1
        dialog = Dialog.as_callee(invite, tag, endpoint.host, endpoint.port)
        await self._talk(dialog, answer.talk_s)
