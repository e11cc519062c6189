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
import contextlib
import math
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plateau_runtime.embedded import EmbeddedBroker
from plateau_sip_gateway.testing.inbound import OfferDriver, driving, gateway_process
from plateau_sip_gateway.testing.sipp import (
    agent_answers_at_once,
    carrier_talks,
    free_both,
    free_port,
    register,
    run_sipp,
    sipp_agent,
    write,
)

pytestmark = pytest.mark.e2e

DNIS = "053000100"
EXTENSION = "1001"
GRACE_S = 3.0


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the Debian package {package}")
    return path


def baresip_modules() -> Path:
    """Where the installed baresip keeps its modules (next to its binary's prefix)."""
    prefix = Path(tool("baresip", "baresip-core")).resolve().parent.parent
    for candidate in sorted(prefix.glob("lib*/**/baresip/modules")):
        if (candidate / "g711.so").exists():
            return candidate
    pytest.fail(f"baresip's modules (g711.so) are not under {prefix}/lib")


def tone(path: Path, seconds: float = 1.0) -> None:
    """An 8 kHz mono 16-bit wav: what baresip's aufile source can play to G.711."""
    rate = 8000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (
            int(6000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(rate * seconds))
        )
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))


@contextlib.contextmanager
def baresip_agent(workdir: Path, gateway_port: int, password: str) -> Iterator[int]:
    """A registered, auto-answering baresip for extension 1001; its SIP port."""
    config_dir = workdir / "baresip"
    config_dir.mkdir()
    tone(config_dir / "tone.wav")
    sip_port = free_both()
    (config_dir / "config").write_text(
        "\n".join(
            [
                f"module_path {baresip_modules()}",
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{sip_port}",
                f"audio_source aufile,{config_dir / 'tone.wav'}",
                "module g711.so",
                "module aufile.so",
                "module sndfile.so",
                "module menu.so",
                "module ctrl_tcp.so",
                "module_app account.so",
                f"ctrl_tcp_listen 127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                "",
            ]
        )
    )
    (config_dir / "accounts").write_text(
        f"<sip:{EXTENSION}@127.0.0.1:{gateway_port}>;auth_pass={password};"
        "answermode=auto;regint=60;audio_codecs=PCMU,PCMA\n"
    )
    log = (workdir / "baresip.log").open("wb")
    process = subprocess.Popen(
        [tool("baresip", "baresip-core"), "-f", str(config_dir)],
        cwd=config_dir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield sip_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()  # baresip can hang on shutdown
            process.wait(5)
        log.close()


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
