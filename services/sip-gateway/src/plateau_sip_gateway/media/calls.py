"""A call's media as the B2BUA sees it: queue greeting and music, agent, recording, compliance.

:class:`CallMedia` turns what happens to a call into the media port's commands, so the B2BUA
has one code path whether media is anchored in rtpengine or the gateway runs signalling-only
(then SDP passes through, nothing is played, and the methods say so by returning ``None`` or
``False``).

rtpengine sees every Plateau call as one call (the Plateau call id, which spans the caller's
and the agent's SIP dialogs) with two sides, :data:`CUSTOMER` (the trunk: an inbound caller
or an outbound customer) and :data:`AGENT`. Before an agent exists the gateway stands in on
the agent side with an SDP answer of its own; when an agent answers, its SDP takes over that
side and rtpengine keeps the customer's ports (``port-latching``), so the customer's first
SDP answer stays valid and no re-INVITE is needed.

The ng sequence, as found against rtpengine 10.5 in user space:

* queued caller with greeting/music: ``offer`` (caller's SDP, from-tag ``customer``) -> the
  SDP for the agent side, kept; ``answer`` (the stand-in's SDP, to-tag ``agent``) -> the SDP
  for the caller's 183; ``block media`` (from-tag ``customer``: the caller's audio goes
  nowhere, what is played still reaches it); ``play media`` greeting, and when its reported
  duration has passed, ``play media`` music with ``repeat-times`` (one file plays at a time);
* agent rung: its INVITE carries the kept offer SDP; its 200: ``stop media``, ``answer``
  (agent's SDP, same tags, ``port-latching``) -> same caller-facing port, ``unblock media``;
  the caller's 200 repeats the 183's SDP (RFC 3261 §13.2.1: the caller keeps the first one);
* recording: ``start recording`` / ``stop recording``, into the daemon's ``--recording-dir``;
* outbound customer answered (its 200 carries the offer) with no agent: ``offer``, stand-in
  ``answer`` -> the SDP for the ACK, ``block media``, ``play media`` the compliance message,
  wait its duration, ``delete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from plateau_sip_gateway.config import MediaConfig, QueueMedia
from plateau_sip_gateway.media.ports import MUSIC_REPEAT, MediaError, MediaPort

log = structlog.get_logger(__name__)

#: rtpengine's name for the trunk side of a call (inbound caller, outbound customer).
CUSTOMER = "customer"
#: rtpengine's name for the other side: the gateway's stand-in, then the agent.
AGENT = "agent"

#: The address in the stand-in's SDP. Nothing is sent to it (the customer's audio is blocked
#: while the gateway stands in); loopback keeps any stray packet on rtpengine's own host, and
#: it must not be 0.0.0.0, which rtpengine takes for hold and answers the customer sendonly.
STAND_IN_ADDRESS = "127.0.0.1"

#: SDP attributes the stand-in copies from the offer: the codecs and their packetisation.
_CODEC_ATTRIBUTES = ("a=rtpmap:", "a=fmtp:", "a=ptime:", "a=maxptime:")


def stand_in_answer(offer: str, address: str) -> str:
    """The gateway's SDP answer to ``offer`` when it stands in for an absent agent.

    It accepts the first audio stream with exactly the offered codecs (so whatever the
    caller sends, and what rtpengine encodes for it, is something the caller offered),
    rejects any other stream (port 0, RFC 3264 §6), and is ``sendrecv`` so that the answer
    stays right once an agent takes over. Its port is 9 (discard): rtpengine sends nothing
    there, because the customer's audio is blocked while the gateway stands in.
    Raises ValueError when the offer has no audio stream.
    """
    lines = [line for line in re.split(r"\r?\n", offer) if line]
    answer = [
        "v=0",
        f"o=plateau 1 1 IN IP4 {address}",
        "s=plateau",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    audio_taken = False
    keeping = False
    for line in lines:
        if line.startswith("m="):
            if keeping:
                answer.append("a=sendrecv")
            kind, _, rest = line[2:].partition(" ")
            _, _, proto_and_formats = rest.partition(" ")
            keeping = kind == "audio" and not audio_taken
            audio_taken = audio_taken or keeping
            answer.append(f"m={kind} {9 if keeping else 0} {proto_and_formats}")
        elif keeping and line.startswith(_CODEC_ATTRIBUTES):
            answer.append(line)
    if keeping:
        answer.append("a=sendrecv")
    if not audio_taken:
        raise ValueError("the SDP offer has no audio stream to answer")
    return "\r\n".join(answer) + "\r\n"


def _media_port(sdp: str) -> int | None:
    found = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
    return int(found.group(1)) if found else None


@dataclass
class _Anchored:
    """What the facade keeps about a call whose media rtpengine anchors."""

    to_agent: str  # rtpengine's SDP offer for whoever takes the agent side
    customer_answer: str | None = None  # the stand-in's answer the customer already has
    playing: asyncio.Task[None] | None = None


class CallMedia:
    """The B2BUA's media calls: one code path with rtpengine or signalling-only."""

    def __init__(self, port: MediaPort, config: MediaConfig | None = None) -> None:
        self.port = port
        self.config = config or MediaConfig()
        self._calls: dict[str, _Anchored] = {}
        # One call's commands run one at a time, in the order the B2BUA asked: a ConnectAgent
        # arriving while the 183 is being prepared, or a hang-up during either, must find
        # the call as the previous command left it.
        self._locks: dict[str, asyncio.Lock] = {}
        self._finishing: set[str] = set()  # outbound abandons still playing their message

    @property
    def available(self) -> bool:
        return self.port.available

    @property
    def description(self) -> str:
        return self.port.description

    def start_report(self) -> list[str]:
        """Lines for the start-up log: what the configured media will and will not do."""
        queues = sorted(name for name, queue in self.config.queues.items() if queue.plays)
        recorded = sorted(name for name, queue in self.config.queues.items() if queue.record)
        if not self.available:
            ignored = [f"queue media for {', '.join(queues)}"] if queues else []
            ignored += [f"recording for {', '.join(recorded)}"] if recorded else []
            ignored += ["the compliance message"] if self.config.compliance_message else []
            if not ignored:
                return []
            return [
                f"media configured but not possible in signalling-only mode: {'; '.join(ignored)}"
                " — callers hear ringback, nothing is recorded, abandons hang up silently"
            ]
        return [
            f"queue media: {', '.join(queues) or 'none (ringback)'}; "
            f"recorded: {', '.join(recorded) or 'none'}; "
            f"compliance message: {'yes' if self.config.compliance_message else 'none'}"
        ]

    def queue(self, entry_point: str | None) -> QueueMedia:
        return self.config.for_entry_point(entry_point)

    # -- inbound: waiting, then an agent -----------------------------------------------

    async def hold_in_queue(self, call_id: str, entry_point: str | None, offer: str) -> str | None:
        """Answer a queued caller with early media: the SDP for a 183, or None for ringback.

        None when the gateway runs signalling-only, when the entry point plays nothing, or
        when rtpengine failed (logged; ringback is what the caller would hear anyway).
        The greeting, then the music, start at once and play until :meth:`agent_answered`
        or :meth:`release`.
        """
        queue = self.queue(entry_point)
        if not self.available or not queue.plays:
            return None
        async with self._serial(call_id):
            if call_id in self._calls:
                return None  # an agent is already being offered the call: ringback it is
            try:
                anchored = await self._stand_in(call_id, offer)
            except (MediaError, ValueError) as error:
                log.warning(
                    "sip_gateway.media.queue_media_failed",
                    call_id=call_id,
                    entry_point=entry_point,
                    error=str(error),
                    fallback="ringback",
                )
                await self._release(call_id)
                return None
            anchored.playing = asyncio.create_task(self._greeting_then_music(call_id, queue))
            return anchored.customer_answer

    async def offer_to_agent(self, call_id: str, offer: str) -> str:
        """The SDP offer for the agent's INVITE, given the caller's ``offer``.

        The same for every agent rung for this call (after a RONA, the next one).
        """
        if not self.available:
            return offer
        async with self._serial(call_id):
            anchored = self._calls.get(call_id)
            if anchored is None:
                to_agent = await self.port.anchor_offer(call_id, CUSTOMER, offer)
                anchored = self._calls.setdefault(call_id, _Anchored(to_agent))
            return anchored.to_agent

    async def agent_answered(self, call_id: str, answer: str) -> str:
        """The SDP answer for the caller's 200, given the agent's ``answer``.

        When the caller already has the 183's answer, the 200 repeats it: the queue music
        stops and the caller's audio reaches the agent, on the same ports.
        """
        if not self.available:
            return answer
        async with self._serial(call_id):
            return await self._agent_answered(call_id, answer)

    async def _agent_answered(self, call_id: str, answer: str) -> str:
        anchored = self._calls.get(call_id)
        if anchored is None:
            raise MediaError(
                f"call {call_id} has no anchored media: offer_to_agent comes before agent_answered"
            )
        await self._stop_music(call_id, anchored)
        to_customer = await self.port.anchor_answer(call_id, CUSTOMER, AGENT, answer)
        if anchored.customer_answer is None:
            anchored.customer_answer = to_customer
            return to_customer
        await self.port.unblock_media(call_id, CUSTOMER)
        if _media_port(to_customer) != _media_port(anchored.customer_answer):
            # rtpengine should keep its ports (port-latching); if it moved them anyway the
            # caller, who keeps its first answer, would send to the old port.
            log.error(
                "sip_gateway.media.customer_port_moved",
                call_id=call_id,
                early=_media_port(anchored.customer_answer),
                now=_media_port(to_customer),
            )
        return anchored.customer_answer

    # -- re-INVITEs (hold, resume) between connected legs -------------------------------

    async def relay_offer(self, call_id: str, from_agent: bool, offer: str) -> str:
        """The SDP offer to relay to the other leg for a re-INVITE's ``offer``."""
        if not self.available or call_id not in self._calls:
            return offer
        sender = AGENT if from_agent else CUSTOMER
        return await self.port.anchor_offer(call_id, sender, offer)

    async def relay_answer(self, call_id: str, from_agent: bool, answer: str) -> str:
        """The SDP answer to return to the leg that sent the re-INVITE (``from_agent``)."""
        if not self.available or call_id not in self._calls:
            return answer
        sender, receiver = (AGENT, CUSTOMER) if from_agent else (CUSTOMER, AGENT)
        return await self.port.anchor_answer(call_id, sender, receiver, answer)

    # -- recording ---------------------------------------------------------------------

    async def record(self, call_id: str, entry_point: str | None) -> bool:
        """Start recording the call when its entry point records calls; whether it does.

        rtpengine writes ``pcaps/<call id>-<random>.pcap`` and ``metadata/`` (with the entry
        point) under its own ``--recording-dir``.
        """
        if not self.queue(entry_point).record:
            return False
        if not self.available:
            log.warning(
                "sip_gateway.media.not_recorded",
                call_id=call_id,
                entry_point=entry_point,
                reason=self.description,
            )
            return False
        await self.port.start_recording(call_id, metadata=f"entry_point={entry_point}")
        return True

    async def stop_recording(self, call_id: str) -> None:
        if self.available:
            await self.port.stop_recording(call_id)

    # -- outbound: the compliance message ----------------------------------------------

    @property
    def plays_compliance_message(self) -> bool:
        """Whether an abandoned outbound answer hears the compliance message."""
        return self.available and self.config.compliance_message is not None

    def abandon_with_message(
        self, call_id: str, offer: str, send_ack: Callable[[str | None], None]
    ) -> asyncio.Task[bool]:
        """Answer an outbound customer's ``offer`` alone, play the message once, free the media.

        For a live answer no agent took in time (the customer's 200 carried the offer, RFC
        3725 flow I, and its ACK was held): ``send_ack`` is called once with the SDP answer
        for the ACK, or None when there is nothing to play (signalling-only, no message, or
        rtpengine failed; then the B2BUA refuses the streams). The task ends — True if the
        message played — when it has been heard (its length as rtpengine reports it), so
        the B2BUA sends its BYE then. Until then a :meth:`release` of the call (the B2BUA
        forgetting the ended call) leaves it to this task.
        """
        self._finishing.add(call_id)
        return asyncio.create_task(self._abandon_with_message(call_id, offer, send_ack))

    async def _abandon_with_message(
        self, call_id: str, offer: str, send_ack: Callable[[str | None], None]
    ) -> bool:
        message = self.config.compliance_message
        answer: str | None = None
        try:
            if message is not None and self.available and offer:
                try:
                    async with self._serial(call_id):
                        answer = (await self._stand_in(call_id, offer)).customer_answer
                except (MediaError, ValueError) as error:
                    log.warning(
                        "sip_gateway.media.compliance_message_failed",
                        call_id=call_id,
                        error=str(error),
                    )
            send_ack(answer)
            if answer is None or message is None:
                return False
            try:
                playback = await self.port.play(call_id, CUSTOMER, message)
            except MediaError as error:
                log.warning(
                    "sip_gateway.media.compliance_message_failed", call_id=call_id, error=str(error)
                )
                return False
            if playback.duration is not None:
                await asyncio.sleep(playback.duration.total_seconds())
            return True
        finally:
            self._finishing.discard(call_id)
            await self.release(call_id)

    # -- end ---------------------------------------------------------------------------

    async def release(self, call_id: str) -> None:
        """Stop what plays and free the call's media in rtpengine; idempotent."""
        if not self.available or call_id in self._finishing:
            return
        async with self._serial(call_id):
            await self._release(call_id)

    async def _release(self, call_id: str) -> None:
        self._locks.pop(call_id, None)
        anchored = self._calls.pop(call_id, None)
        if anchored is not None and anchored.playing is not None:
            anchored.playing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await anchored.playing
        await self.port.release(call_id)

    async def close(self) -> None:
        """Stop every player (gateway shutdown); the calls are closed at the next start."""
        for anchored in self._calls.values():
            if anchored.playing is not None:
                anchored.playing.cancel()
        self._calls.clear()
        await self.port.close()

    # -- internals ---------------------------------------------------------------------

    def _serial(self, call_id: str) -> asyncio.Lock:
        return self._locks.setdefault(call_id, asyncio.Lock())

    async def _stand_in(self, call_id: str, offer: str) -> _Anchored:
        """Anchor the customer's offer and answer it with the gateway's stand-in."""
        to_agent = await self.port.anchor_offer(call_id, CUSTOMER, offer)
        answer = stand_in_answer(offer, STAND_IN_ADDRESS)
        to_customer = await self.port.anchor_answer(call_id, CUSTOMER, AGENT, answer)
        # Nobody is on the agent side yet: the customer's audio must not go to the stand-in.
        await self.port.block_media(call_id, CUSTOMER)
        anchored = _Anchored(to_agent, to_customer)
        self._calls[call_id] = anchored
        return anchored

    async def _greeting_then_music(self, call_id: str, queue: QueueMedia) -> None:
        try:
            if queue.greeting is not None:
                playback = await self.port.play(call_id, CUSTOMER, queue.greeting)
                if queue.music is None:
                    return
                # rtpengine plays one file at a time: the music must wait for the greeting.
                if playback.duration is not None:
                    await asyncio.sleep(playback.duration.total_seconds())
            if queue.music is not None:
                await self.port.play(call_id, CUSTOMER, queue.music, repeat=MUSIC_REPEAT)
        except MediaError as error:
            log.warning(
                "sip_gateway.media.queue_playback_failed", call_id=call_id, error=str(error)
            )

    async def _stop_music(self, call_id: str, anchored: _Anchored) -> None:
        if anchored.playing is None:
            return
        anchored.playing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await anchored.playing
        anchored.playing = None
        await self.port.stop_playing(call_id, CUSTOMER)
