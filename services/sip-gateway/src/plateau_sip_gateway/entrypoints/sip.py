"""SIP entry point: routes each new server transaction of the endpoint to its handler."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from plateau_contracts.events.calls import DialRequester
from plateau_sip_gateway.adapters.recorder import Recorder
from plateau_sip_gateway.b2bua import ALLOW, B2bua, NoOutboundTrunkError, TrunkFullError
from plateau_sip_gateway.domain.allowlist import Refused
from plateau_sip_gateway.domain.edge import SOURCE_HEADER, ForwardedSourceError, TrustedProxies
from plateau_sip_gateway.registrar_service import RegistrarService
from plateau_sip_gateway.sip import SipResponse, SipUri
from plateau_sip_gateway.sip.endpoint import response_address
from plateau_sip_gateway.sip.transaction import InviteServerTransaction, ServerTransaction
from plateau_sip_gateway.sip.transport import Source

log = structlog.get_logger(__name__)

FORBIDDEN_DIAL_CODE = 403


def source_of(tx: ServerTransaction, proxies: TrustedProxies | None = None) -> Source:
    """Where the request came from.

    The network source is what the endpoint stamped on the top Via (``received``/
    ``rport``): the address its responses go to. When that is one of the trusted
    ``proxies`` and it reported the real source (``X-Plateau-Source``), the source is that
    one, relayed by the proxy. ForwardedSourceError for a header a trusted proxy garbled.
    """
    via = tx.request.top_via
    transport = via.transport.upper()
    remote = response_address(via, reliable=transport != "UDP")
    if proxies:
        values = tx.request.headers.get_all(SOURCE_HEADER)
        forwarded = proxies.real_source(remote[0], values)
        if forwarded is not None:
            return Source(transport, forwarded.address, ("", 0), relay=remote)
    return Source(transport, remote, ("", 0))


class SipEntrypoint:
    """Translates SIP requests into calls of the registrar and the B2BUA."""

    def __init__(
        self,
        b2bua: B2bua,
        registrar: RegistrarService,
        recorder: Recorder,
        tenant: str,
        *,
        proxies: TrustedProxies | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._proxies = proxies or TrustedProxies()
        self._b2bua = b2bua
        self._registrar = registrar
        self._recorder = recorder
        self._tenant = tenant

    def handle(self, tx: ServerTransaction) -> None:
        """One new request (all methods but ACK; CANCEL goes to its INVITE)."""
        request = tx.request
        try:
            source = source_of(tx, self._proxies)
        except ForwardedSourceError as exc:
            log.warning("sip_gateway.bad_forwarded_source", method=request.method, error=str(exc))
            # The proxy is ours and broken: say so plainly (the peer is the proxy).
            tx.respond(tx.create_response(400, str(exc)[:150]))
            return
        method = request.method
        if method == "REGISTER":
            response, events = self._registrar.handle(
                request, source.remote, source.transport, relayed=source.relay is not None
            )
            tx.respond(response)
            for event in events:
                self._recorder.record(self._tenant, [event])
        elif method == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            if request.to.tag is not None:
                self._b2bua.reinvite(tx, source)
            elif self._is_softphone(source):
                self._softphone_dial(tx, source)
            else:
                self._b2bua.inbound(tx, source)
        elif method == "BYE":
            self._b2bua.bye(tx, source)
        elif method == "REFER":
            self._b2bua.refer(tx, source)
        elif method == "NOTIFY":
            self._b2bua.notify(tx)
        elif method == "OPTIONS":
            tx.respond(tx.create_response(200, headers=(("Allow", ALLOW),)))
        else:
            tx.respond(tx.create_response(405, headers=(("Allow", ALLOW),)))

    def _is_softphone(self, source: Source) -> bool:
        """Whether the request comes from where a registered softphone registered from."""
        # The B2BUA's view: with several replicas, softphones registered on any of them.
        return self._b2bua.registrar.bound_from(source.remote, self._clock())

    def _softphone_dial(self, tx: InviteServerTransaction, source: Source) -> None:
        """An agent dialling out: authenticated, then checked against the allow-list."""
        request = tx.request
        auth = self._registrar.gate.authenticate(request, source.remote, proxy=True)
        if isinstance(auth, SipResponse):
            tx.respond(auth)
            return
        username = auth.username
        number = request.uri.user if isinstance(request.uri, SipUri) else None
        decision = self._b2bua.allowlist.check(self._tenant, None, number or "")
        if isinstance(decision, Refused):
            self._b2bua.refuse_dial(
                self._tenant,
                decision,
                requested_by=DialRequester.AGENT_SOFTPHONE,
                requester=username,
                sip_code=FORBIDDEN_DIAL_CODE,
            )
            tx.respond(tx.create_response(FORBIDDEN_DIAL_CODE))
            return
        try:
            self._b2bua.dial_for_softphone(
                tx, self._tenant, decision, extension=username, source=source
            )
        except (NoOutboundTrunkError, TrunkFullError) as exc:
            log.warning("sip_gateway.softphone_dial_failed", extension=username, error=str(exc))
            tx.respond(tx.create_response(503, "No Outbound Capacity"))
