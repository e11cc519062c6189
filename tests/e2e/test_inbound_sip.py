"""Inbound calls end to end: ``sipp`` as the carrier -> the sip-gateway process (``python -m
plateau_sip_gateway``, its event store and outbox relay) -> a test driver that consumes
``call.offered`` from the real broker and calls ``CallControl.ConnectAgent`` -> a real
``baresip`` softphone registered with digest auth and answering automatically.

Every call must complete, and each call's events must arrive on ``plateau.calls`` in
order: offered, agent_ringing, connected, ended. The same then with ``sipp`` agents at
50 calls/s.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sip_peers import baresip_agent

from plateau_runtime.embedded import EmbeddedBroker
from plateau_sip_gateway.testing.inbound import OfferDriver, driving, gateway_process
from plateau_sip_gateway.testing.sipp import (
    agent_answers_at_once,
    carrier_talks,
    register,
    run_sipp,
    sipp_agent,
    write,
)

pytestmark = pytest.mark.e2e

DNIS = "053000100"
EXTENSION = "1001"


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_100_calls_reach_a_baresip_agent_in_order(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    calls = 100
    async with gateway_process(
        admin_dsn, broker.bootstrap, tmp_path, {EXTENSION: password}
    ) as gateway:
        with baresip_agent(tmp_path, gateway.sip_port, password):
            driver = OfferDriver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
            async with driving(driver):
                await wait_for(
                    lambda: f"extension-{EXTENSION}" in driver.streams,
                    30,
                    "baresip's registration on the bus",
                )
                scenario = write(tmp_path, "carrier.xml", carrier_talks(200))
                started = time.monotonic()
                code, output = await run_sipp(
                    [
                        *["-sf", scenario, "-s", DNIS, "-m", str(calls), "-r", "10"],
                        *["-l", "1", gateway.sip_target],
                    ],
                    tmp_path,
                )
                seconds = time.monotonic() - started
                assert code == 0, f"sipp carrier failed:\n{output}\n{gateway.output()}"
                await wait_for(lambda: driver.ended() >= calls, 30, f"{calls} call.ended")
            assert driver.errors == []
            assert driver.out_of_order() == {}
            assert driver.ended() == calls
            print(f"\n{calls} calls sipp -> gateway -> baresip completed in {seconds:.1f} s")


async def test_sipp_agents_at_50_calls_per_second(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    calls, rate = 500, 50
    async with (
        gateway_process(admin_dsn, broker.bootstrap, tmp_path, {EXTENSION: password}) as gateway,
        sipp_agent(tmp_path, agent_answers_at_once(), trace=True) as agent,
    ):
        scenario = write(tmp_path, "register.xml", register(EXTENSION, password, agent.port))
        code, output = await run_sipp(["-sf", scenario, "-m", "1", gateway.sip_target], tmp_path)
        assert code == 0, f"REGISTER failed:\n{output}"
        driver = OfferDriver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
        async with driving(driver):
            scenario = write(tmp_path, "carrier.xml", carrier_talks(1000))
            started = time.monotonic()
            code, output = await run_sipp(
                [
                    *["-sf", scenario, "-s", DNIS, "-m", str(calls), "-r", str(rate)],
                    *["-l", "400", gateway.sip_target],
                ],
                tmp_path,
            )
            seconds = time.monotonic() - started
            assert code == 0, f"sipp carrier failed:\n{output}\n{gateway.output()}"
            await wait_for(lambda: driver.ended() >= calls, 60, f"{calls} call.ended")
        assert driver.errors == []
        assert driver.out_of_order() == {}
        print(f"\n{calls} calls at {rate}/s sipp -> gateway -> sipp agent in {seconds:.1f} s")
