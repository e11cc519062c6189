"""The endpoint against a real SIP peer: ``sipp`` calling a UAS built on it, and a UAC
built on it calling ``sipp``, over UDP and over TCP on loopback sockets.

``sipp`` exits 0 only when every call succeeded. It must be installed (Debian package
``sip-tester``): a missing binary fails these tests, in CI and outside it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plateau_sip_gateway.sip import Headers, SipRequest, parse_uri
from plateau_sip_gateway.sip.endpoint import Destination, Endpoint, EndpointSettings
from plateau_sip_gateway.sip.transaction import InviteServerTransaction, ServerTransaction

pytestmark = pytest.mark.integration

SIPP_TIMEOUT = 90.0


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail(
            "sipp is not installed: these tests need a real SIP peer. "
            "Install the Debian package sip-tester (apt-get install sip-tester)."
        )
    return path


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SippRun:
    returncode: int
    output: str
    seconds: float


async def run_sipp(args: list[str], cwd: Path, timeout: float = SIPP_TIMEOUT) -> SippRun:
    """Run sipp to completion (bounded), keeping its output for the failure message."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sipp_binary(),
        *args,
        "-nostdin",
        "-mp",
        str(free_port(socket.SOCK_DGRAM)),
        "-timeout",
        f"{int(timeout) - 5}s",
        "-timeout_error",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return SippRun(
        process.returncode if process.returncode is not None else -1,
        output.decode(errors="replace")[-3000:],
        time.monotonic() - started,
    )


class TestUas:
    """A minimal UAS on the endpoint: INVITE → 180, 200 (retransmitted until ACK);
    BYE and OPTIONS → 200; anything else → 405."""

    __test__ = False

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.invites = 0
        self.acked = 0
        self.byes = 0
        endpoint.on_request(self.handle)

    def contact(self, transport: str) -> str:
        host, port = self.endpoint.local_address(transport)
        return f"<sip:uas@{host}:{port};transport={transport.lower()}>"

    async def handle(self, tx: ServerTransaction) -> None:
        contact = ("Contact", self.contact(tx.request.top_via.transport))
        if isinstance(tx, InviteServerTransaction):
            self.invites += 1
            tx.respond(tx.create_response(180, headers=(contact,)))
            ok = tx.create_response(200, headers=(contact,))
            if await self.endpoint.send_2xx(tx, ok) is not None:
                self.acked += 1
        elif tx.method in ("BYE", "OPTIONS"):
            self.byes += tx.method == "BYE"
            tx.respond(tx.create_response(200))
        else:
            tx.respond(tx.create_response(405, headers=(("Allow", "INVITE, ACK, BYE, OPTIONS"),)))


@pytest.fixture
async def uas_endpoint() -> AsyncIterator[Endpoint]:
    endpoint = await Endpoint.listen(EndpointSettings(host="127.0.0.1"))
    try:
        yield endpoint
    finally:
        await endpoint.close()


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_sipp_calls_a_uas_on_the_endpoint(
    uas_endpoint: Endpoint, transport: str, tmp_path: Path
) -> None:
    uas = TestUas(uas_endpoint)
    host, port = uas_endpoint.local_address(transport)
    calls = 200
    sipp_port = free_port(socket.SOCK_STREAM if transport == "TCP" else socket.SOCK_DGRAM)
    args = ["-sn", "uac", f"{host}:{port}", "-i", "127.0.0.1", "-p", str(sipp_port)]
    args += ["-m", str(calls), "-r", "50", "-l", "100"]
    if transport == "TCP":
        args += ["-t", "t1"]
    run = await run_sipp(args, tmp_path)
    assert run.returncode == 0, f"sipp exited {run.returncode}:\n{run.output}"
    assert uas.invites == calls and uas.byes == calls and uas.acked == calls
    stats = uas_endpoint.stats
    assert stats.malformed_answered == stats.malformed_dropped == stats.handler_errors == 0
    print(f"sipp uac -> endpoint UAS over {transport}: {calls} calls in {run.seconds:.1f} s")


async def call_once(
    endpoint: Endpoint, destination: Destination, number: int, transport: str
) -> tuple[int, int]:
    """One call to a ``sipp -sn uas``: INVITE, ACK for the 200, BYE; the final statuses."""
    host, port = endpoint.local_address(transport)
    target = f"sip:service@{destination.host}:{destination.port}"
    tag = endpoint.new_tag()
    call_id = f"call-{number}-{endpoint.new_tag()}@127.0.0.1"
    common = [
        ("From", f"<sip:uac@{host}:{port}>;tag={tag}"),
        ("Call-ID", call_id),
        ("Contact", f"<sip:uac@{host}:{port};transport={transport.lower()}>"),
    ]
    invite = SipRequest(
        "INVITE",
        parse_uri(target),
        Headers([*common, ("To", f"<{target}>"), ("CSeq", "1 INVITE")]),
    )
    tx, answer = await endpoint.request(invite, destination)
    if answer.status != 200:
        return answer.status, 0
    remote = answer.contacts[0].uri if answer.contacts else parse_uri(target)
    to = answer.headers.get("To") or ""

    def in_dialog(method: str, cseq: int) -> SipRequest:
        fields = [*common, ("To", to), ("CSeq", f"{cseq} {method}")]
        return SipRequest(method, remote, Headers(fields))

    ack = in_dialog("ACK", 1)
    endpoint.send_raw(ack, destination)
    # a retransmitted 200 (our ACK lost) is answered with the same ACK
    tx.on_response = lambda r: endpoint.send_raw(ack, destination) if r.status == 200 else None
    _, bye = await endpoint.request(in_dialog("BYE", 2), destination)
    return answer.status, bye.status


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_a_uac_on_the_endpoint_calls_sipp(transport: str, tmp_path: Path) -> None:
    calls = 20
    kind = socket.SOCK_STREAM if transport == "TCP" else socket.SOCK_DGRAM
    sipp_port = free_port(kind)
    args = ["-sn", "uas", "-i", "127.0.0.1", "-p", str(sipp_port), "-m", str(calls)]
    if transport == "TCP":
        args += ["-t", "t1"]
    sipp = asyncio.create_task(run_sipp(args, tmp_path))
    await asyncio.sleep(0.5)  # let sipp bind its port
    endpoint = await Endpoint.listen(EndpointSettings(host="127.0.0.1"))
    try:
        destination = Destination(transport, "127.0.0.1", sipp_port)
        async with asyncio.timeout(60):
            results = await asyncio.gather(
                *(call_once(endpoint, destination, n, transport) for n in range(calls))
            )
        assert results == [(200, 200)] * calls
        run = await sipp
        assert run.returncode == 0, f"sipp exited {run.returncode}:\n{run.output}"
    finally:
        if not sipp.done():
            sipp.cancel()
        await endpoint.close()
    # every transaction ended over TCP; over UDP only Timer D/K/M ones linger
    if transport == "TCP":
        assert endpoint.stats.transactions.retransmissions == 0
