"""OPTIONS keep-alive both ways: the gateway answers a carrier's OPTIONS, and pings each
trunk's outbound targets, telling a carrier that answers from one that does not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sip_gateway_harness import TENANT, RunningGateway, free_port, running_gateway, wait_until

from plateau_runtime.testing import MigratedSchema
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.sip.endpoint import Endpoint, EndpointSettings
from plateau_sip_gateway.sip.timers import TimerSettings
from plateau_sip_gateway.sip.transaction import ServerTransaction

pytestmark = pytest.mark.integration


@pytest.fixture
async def carrier() -> AsyncIterator[Endpoint]:
    endpoint = await Endpoint.listen(EndpointSettings(host="127.0.0.1", tcp_port=None))
    pings: list[str] = []

    def answer(tx: ServerTransaction) -> None:
        pings.append(tx.method)
        tx.respond(tx.create_response(200))

    endpoint.on_request(answer)
    endpoint.pings = pings  # type: ignore[attr-defined]
    try:
        yield endpoint
    finally:
        await endpoint.close()


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    tmp_path: Path,
    carrier: Endpoint,
) -> AsyncIterator[RunningGateway]:
    alive = carrier.local_address("UDP")[1]
    config = TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "alive",
                    "tenant": TENANT,
                    "source_networks": ["127.0.0.1/32"],
                    "outbound": [{"host": "127.0.0.1", "port": alive}],
                    "capacity": {"kind": "calls", "max_calls": 1},
                    "options_interval_s": 1,
                },
                {
                    "name": "dead",
                    "tenant": TENANT,
                    "source_networks": ["127.0.0.9/32"],
                    "outbound": [{"host": "127.0.0.1", "port": free_port()}],
                    "capacity": {"kind": "calls", "max_calls": 1},
                    "options_interval_s": 1,
                },
            ]
        }
    )
    async with running_gateway(
        service_pool, tmp_path, passwords={}, config=config, schema=service_schema.schema
    ) as running:
        yield running


async def test_trunk_targets_are_pinged_and_reachability_is_known(
    gw: RunningGateway, carrier: Endpoint
) -> None:
    keepalive = gw.gateway.keepalive
    assert keepalive is not None
    alive = f"127.0.0.1:{carrier.local_address('UDP')[1]}"

    async def known() -> bool:
        states = keepalive.reachable
        return states.get(("alive", alive)) is True and False in states.values()

    # The dead target is known once its OPTIONS times out (64*T1 = 32 s at the default T1).
    await wait_until(known, timeout=45, what="both trunks' reachability")
    assert len(carrier.pings) >= 1  # type: ignore[attr-defined]


async def test_the_gateway_answers_a_carriers_options(gw: RunningGateway) -> None:
    from plateau_sip_gateway.sip import Headers, SipRequest, parse_uri
    from plateau_sip_gateway.sip.endpoint import Destination

    async with await Endpoint.listen(
        EndpointSettings(host="127.0.0.1", tcp_port=None, timers=TimerSettings())
    ) as peer:
        uri = f"sip:{gw.sip_target}"
        request = SipRequest(
            "OPTIONS",
            parse_uri(uri),
            Headers(
                [
                    ("From", f"<sip:carrier@127.0.0.1>;tag={peer.new_tag()}"),
                    ("To", f"<{uri}>"),
                    ("Call-ID", f"ka-{peer.new_tag()}"),
                    ("CSeq", "1 OPTIONS"),
                ]
            ),
        )
        _, response = await peer.request(request, Destination.udp("127.0.0.1", gw.sip_port))
    assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")
