"""OPTIONS keep-alive towards the trunks' carriers: which outbound targets answer.

Every ``options_interval_s`` each target of a trunk gets an OPTIONS; any final response
means the carrier is reachable (even 404/405: it answered), a local 408/503 (timeout,
transport failure) means it is not. Changes are logged; there is no contract event for a
trunk's reachability yet, so nothing is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid

import structlog

from plateau_sip_gateway.domain.trunks import SipTarget, TrunkConfig, TrunkDirectory
from plateau_sip_gateway.settings import OutboundProxy
from plateau_sip_gateway.sip import Headers, SipRequest, parse_uri
from plateau_sip_gateway.sip.endpoint import Destination, Endpoint

log = structlog.get_logger(__name__)


def _destination(target: SipTarget) -> Destination | None:
    try:
        ipaddress.ip_address(target.host.strip("[]"))
    except ValueError:
        return None  # names are not resolved yet (no RFC 3263 in the endpoint)
    return Destination(target.transport.upper(), target.host.strip("[]"), target.port)


class TrunkKeepAlive:
    """Pings every trunk target; ``reachable[(trunk, host:port)]`` holds the last result."""

    def __init__(
        self,
        endpoint: Endpoint,
        trunks: TrunkDirectory,
        *,
        outbound_proxy: OutboundProxy | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._trunks = trunks
        # Behind the edge the carrier knows the edge's address: OPTIONS leave through it.
        self._proxy = outbound_proxy
        self.reachable: dict[tuple[str, str], bool] = {}

    async def run(self, stop: asyncio.Event) -> None:
        jobs = [
            asyncio.create_task(self._ping_forever(trunk, target, stop))
            for trunk in self._trunks
            if trunk.enabled and trunk.options_interval_s > 0
            for target in trunk.outbound
        ]
        if not jobs:
            return
        try:
            await asyncio.gather(*jobs)
        finally:
            for job in jobs:
                job.cancel()

    async def _ping_forever(
        self, trunk: TrunkConfig, target: SipTarget, stop: asyncio.Event
    ) -> None:
        destination = _destination(target)
        if destination is None:
            log.warning("sip_gateway.trunk_target_not_an_ip", trunk=trunk.name, host=target.host)
            return
        while not stop.is_set():
            await self.ping(trunk, destination)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), trunk.options_interval_s)

    async def ping(self, trunk: TrunkConfig, destination: Destination) -> bool:
        endpoint = self._endpoint
        host = endpoint.advertised_host
        where = f"{destination.host}:{destination.port}"
        uri = f"sip:{where}"
        fields = [
            ("From", f"<sip:plateau@{host}>;tag={endpoint.new_tag()}"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"{uuid.uuid4().hex}@plateau"),
            ("CSeq", "1 OPTIONS"),
            ("Max-Forwards", "70"),
        ]
        next_hop = destination
        if self._proxy is not None:
            next_hop, routes, uri = self._proxy.toward(uri, destination.transport)
            fields.extend(("Route", route) for route in routes)
        request = SipRequest("OPTIONS", parse_uri(uri), Headers(fields))
        tx, _ = await endpoint.request(request, next_hop)
        up = tx.failure is None  # a local 408/503 (timeout, transport) is no answer

        key = (trunk.name, where)
        if self.reachable.get(key) != up:
            log.info("sip_gateway.trunk_reachability", trunk=trunk.name, target=where, up=up)
        self.reachable[key] = up
        return up
