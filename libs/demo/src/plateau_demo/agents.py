"""The demo's agents: each one a softphone (digest REGISTER, answers INVITEs after a short
ring, talks, hangs up) and a desk (AgentDesk over gRPC: login, ready, wrap-up, pauses)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

import grpc

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as pb
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as pb_grpc
from plateau_demo import sip
from plateau_demo.dialog import Dialog, dialog_key
from plateau_demo.endpoint import Address, SipEndpoint
from plateau_demo.model import TrafficModel
from plateau_demo.sip import Challenge, SipMessage, SipParseError

log = logging.getLogger(__name__)
REGISTER_EXPIRES = 300
RETRY_S = 3.0
ACT_AGAIN_S = 30.0  # a state that lasts: act on it again (the last command may have failed)
DISPOSITIONS = ("resolved", "information given", "callback promised", "escalated")


def asks_auto_answer(invite: SipMessage) -> bool:
    """Whether the INVITE asks the phone to answer by itself: RFC 7462's
    ``urn:alert:service:auto-answer`` in Alert-Info, or Call-Info's ``answer-after=0``."""
    alerts = ",".join(invite.get_all("Alert-Info")).lower()
    infos = ",".join(invite.get_all("Call-Info")).replace(" ", "").lower()
    return "urn:alert:service:auto-answer" in alerts or "answer-after=0" in infos


@dataclass(frozen=True)
class AgentIdentity:
    """Who the simulated agent is: the acd's agent id and the gateway's extension."""

    agent_id: str
    extension: str
    password: str


class Softphone:
    """The agent's SIP user agent, on its own UDP port."""

    def __init__(
        self, identity: AgentIdentity, gateway: Address, model: TrafficModel, counts: Counter[str]
    ) -> None:
        self.identity = identity
        self.gateway = gateway
        self.model = model
        self.counts = counts
        self.endpoint: SipEndpoint | None = None
        self.registered = asyncio.Event()
        self._challenge: Challenge | None = None
        self._nc = 0
        self._register_call_id = ""
        self._register_cseq = 0
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._ringing: dict[tuple[str, str], asyncio.Event] = {}
        self._busy = False

    async def open(self, host: str) -> None:
        self.endpoint = await SipEndpoint.open(
            f"softphone {self.identity.extension}", host, 0, self._on_request
        )
        self._register_call_id = sip.new_call_id(host)

    async def close(self) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        byes = [
            endpoint.request(d.request("BYE"), self.gateway)
            for d in list(self._dialogs.values())
            if not d.ended.is_set()
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*byes, self._register(0)), 3.0)
        await endpoint.close()

    # -- registration --------------------------------------------------------------------

    async def keep_registered(self, stop: asyncio.Event) -> None:
        """Register, then refresh at half the granted time, until ``stop``."""
        while not stop.is_set():
            granted = await self._register(REGISTER_EXPIRES)
            if granted:
                self.registered.set()
            else:
                self.registered.clear()
            wait = granted / 2 if granted else RETRY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _register(self, expires: int) -> int:
        """One REGISTER (answering the digest challenge); the granted seconds, 0 if refused."""
        endpoint = self.endpoint
        assert endpoint is not None
        ext = self.identity.extension
        gw_host, gw_port = self.gateway
        registrar = f"sip:{gw_host}:{gw_port}"
        for _ in range(3):
            self._register_cseq += 1
            extra = [("Expires", str(expires))]
            if self._challenge is not None:
                self._nc += 1
                extra.append(
                    (
                        "Authorization",
                        sip.authorization(
                            self._challenge,
                            username=ext,
                            password=self.identity.password,
                            method="REGISTER",
                            uri=registrar,
                            nc=self._nc,
                        ),
                    )
                )
            message = sip.request(
                "REGISTER",
                registrar,
                via_host=endpoint.host,
                via_port=endpoint.port,
                from_=f"<sip:{ext}@{gw_host}>;tag={sip.new_tag()}",
                to=f"<sip:{ext}@{gw_host}>",
                call_id=self._register_call_id,
                cseq=self._register_cseq,
                contact=f"<sip:{ext}@{endpoint.host}:{endpoint.port}>",
                extra=extra,
            )
            answer = await endpoint.request(message, self.gateway)
            if answer is None:
                log.warning("extension %s: the registrar did not answer", ext)
                return 0
            if answer.status in (401, 407):
                header = "WWW-Authenticate" if answer.status == 401 else "Proxy-Authenticate"
                try:
                    self._challenge = sip.choose_challenge(answer.get_all(header))
                except SipParseError as exc:
                    log.warning("extension %s: unusable challenge: %s", ext, exc)
                    return 0
                self._nc = 0
                continue
            if 200 <= answer.status < 300:
                return self._granted(answer, expires)
            log.warning("extension %s: REGISTER refused with %s", ext, answer.status)
            self._challenge = None
            return 0
        return 0

    @staticmethod
    def _granted(answer: SipMessage, asked: int) -> int:
        for contact in answer.get_all("Contact"):
            value = sip.param(contact, "expires")
            if value and value.isdigit():
                return int(value)
        expires = answer.get("Expires")
        return int(expires) if expires and expires.isdigit() else asked

    # -- calls ---------------------------------------------------------------------------

    async def _on_request(self, message: SipMessage, source: Address) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        key = dialog_key(message, incoming=True)
        match message.method:
            case "INVITE" if not message.to_tag:
                await self._ring_and_answer(message, source)
            case "INVITE":  # re-INVITE: accept whatever the gateway proposes
                endpoint.respond(message, self._ok(message, ""), source)
            case "CANCEL":
                ringing = self._ringing.get((message.call_id, message.branch))
                endpoint.respond(message, sip.response(message, 200 if ringing else 481), source)
                if ringing is not None:
                    ringing.set()
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

    def _ok(self, invite: SipMessage, tag: str) -> SipMessage:
        endpoint = self.endpoint
        assert endpoint is not None
        body = sip.sdp(endpoint.host, 30000 + 2 * self.model.rng.randrange(5000))
        contact = f"<sip:{self.identity.extension}@{endpoint.host}:{endpoint.port}>"
        return sip.response(invite, 200, to_tag=tag, contact=contact, body=body)

    async def _ring_and_answer(self, invite: SipMessage, source: Address) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        tag = sip.new_tag()
        if self._busy:
            endpoint.respond(invite, sip.response(invite, 486, to_tag=tag), source)
            return
        self._busy = True
        try:
            contact = f"<sip:{self.identity.extension}@{endpoint.host}:{endpoint.port}>"
            endpoint.respond(invite, sip.response(invite, 180, to_tag=tag, contact=contact), source)
            cancelled = asyncio.Event()
            ring_key = (invite.call_id, invite.branch)
            self._ringing[ring_key] = cancelled
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        cancelled.wait(), self.model.ring_s(asks_auto_answer(invite))
                    )
            finally:
                self._ringing.pop(ring_key, None)
            if cancelled.is_set():
                endpoint.respond(invite, sip.response(invite, 487, to_tag=tag), source)
                return
            endpoint.respond(invite, self._ok(invite, tag), source)
            self.counts["calls taken by agents"] += 1
            dialog = Dialog.as_callee(invite, tag, endpoint.host, endpoint.port)
            self._dialogs[dialog.key] = dialog
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dialog.ended.wait(), self.model.talk_s())
                if not dialog.ended.is_set():
                    dialog.ended.set()
                    await endpoint.request(dialog.request("BYE"), self.gateway)
            finally:
                self._dialogs.pop(dialog.key, None)
        finally:
            self._busy = False


class Desk:
    """The agent's desktop: AgentDesk over gRPC, acting on the state the acd reports."""

    def __init__(
        self,
        identity: AgentIdentity,
        channel: grpc.aio.Channel,
        tenant: str,
        model: TrafficModel,
        counts: Counter[str],
    ) -> None:
        self.identity = identity
        self.stub = pb_grpc.AgentDeskStub(channel)
        self.metadata = (("x-plateau-tenant", tenant), ("x-plateau-user", "plateau-demo"))
        self.model = model
        self.counts = counts
        self.status: pb.AgentStatus | None = None
        self._changed = asyncio.Event()
        self._logged_in = False

    async def _call(self, name: str, request: object) -> pb.AgentStatus | None:
        method = getattr(self.stub, name)
        try:
            status: pb.AgentStatus = await method(request, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            level = (
                logging.DEBUG
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                else logging.WARNING
            )
            log.log(level, "agent %s: %s refused: %s", self.identity.agent_id, name, exc.details())
            return None
        return status

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow the agent's state as the acd streams it (reconnecting when it breaks)."""
        agent_id = self.identity.agent_id
        while not stop.is_set():
            try:
                stream = self.stub.WatchAgent(
                    pb.WatchAgentRequest(agent_id=agent_id), metadata=self.metadata
                )
                async for update in stream:
                    self.status = update.status
                    self._changed.set()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    log.warning(
                        "agent %s is not configured in the tenant: %s", agent_id, exc.details()
                    )
                    return
                log.debug("agent %s: watch ended: %s", agent_id, exc.details())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)

    async def work(self, stop: asyncio.Event, phone: Softphone) -> None:
        """Log in once the softphone is registered, then act on each state as an agent
        would: take calls, wrap up, sometimes pause, get ready again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(phone.registered.wait(), 30)
        acted: tuple[int, int] | None = None
        acted_at = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)
            self._changed.clear()
            status = self.status
            if status is None:
                continue
            mark = (status.state, status.state_since.ToNanoseconds())
            now = asyncio.get_running_loop().time()
            if mark == acted and now - acted_at < ACT_AGAIN_S:
                continue
            acted = mark
            await self._act(status, stop)
            acted_at = asyncio.get_running_loop().time()

    async def _login(self) -> None:
        done = await self._call(
            "Login",
            pb.LoginRequest(agent_id=self.identity.agent_id, extension=self.identity.extension),
        )
        if done is not None:
            self.counts["agent logins"] += 1
            self._logged_in = True
            await self._call(
                "SetAvailable", pb.SetAvailableRequest(agent_id=self.identity.agent_id)
            )

    async def _act(self, status: pb.AgentStatus, stop: asyncio.Event) -> None:
        agent_id = self.identity.agent_id
        state = status.state
        if state == pb.AGENT_STATE_LOGGED_OUT:
            if self._logged_in and await self._sleep(stop, RETRY_S):
                return
            await self._login()
        elif state == pb.AGENT_STATE_UNAVAILABLE or (
            state == pb.AGENT_STATE_PAUSED and not status.pause_code
        ):
            # Just logged in, or not responding after a missed call: get ready again.
            if await self._sleep(stop, 2.0):
                return
            await self._call("SetAvailable", pb.SetAvailableRequest(agent_id=agent_id))
        elif state == pb.AGENT_STATE_WRAP_UP:
            if await self._sleep(stop, self.model.wrap_up_s()):
                return
            code = self.model.pause_after_call()
            if code is not None:
                # Asked during wrap-up, the pause is taken when the wrap-up ends.
                await self._call("Pause", pb.PauseRequest(agent_id=agent_id, code=code))
            disposition = self.model.rng.choice(DISPOSITIONS)
            await self._call(
                "CompleteWrapUp",
                pb.CompleteWrapUpRequest(
                    agent_id=agent_id, call_id=status.call_id, disposition=disposition
                ),
            )
        elif state == pb.AGENT_STATE_PAUSED:
            self.counts[f"pauses ({status.pause_code})"] += 1
            if await self._sleep(stop, self.model.pause_s()):
                return
            await self._call("SetAvailable", pb.SetAvailableRequest(agent_id=agent_id))

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
        """Wait ``seconds``; whether the demo is stopping meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()

    async def log_out(self, attempts: int = 8) -> None:
        """Leave the floor. Refused while the acd still sees a call the demo just hung up
        (its end reaches the acd a moment later): asked again, a few times."""
        request = pb.LogoutRequest(agent_id=self.identity.agent_id)
        for _ in range(attempts):
            try:
                await self.stub.Logout(request, metadata=self.metadata, timeout=5)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    log.debug("agent %s: Logout refused: %s", self.identity.agent_id, exc.details())
                    return
                if "is logged_out" in (exc.details() or ""):
                    return
            await asyncio.sleep(0.5)
