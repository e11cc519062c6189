"""The production SIP edge's Kamailio configuration, run for real: every message of a call
reaches the gateway replica that got its INVITE.

Kamailio (Debian's, from tools/test-packages) runs deploy/k8s's kamailio.cfg on loopback
with two sipp processes as the gateway replicas; a sipp carrier places calls through it.
The replicas answer with a Contact naming the edge itself, as the gateway does when it
advertises the load balancer's address, so the carrier's ACK and BYE come back to the edge
with nothing but their Call-ID to find the replica by. A BYE that reached the other replica
would be answered 481 there and fail the carrier's call.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from plateau_sip_gateway.testing.sipp import call_counts, free_both, run_sipp, start_sipp, write

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DISPATCHER = ROOT / "deploy" / "k8s" / "components" / "sip-dispatcher"
CALLS = 40

#: A gateway replica: answers an INVITE 200 with a Contact at the edge (EDGE_PORT), then
#: takes the ACK and the BYE of the same call.
REPLICA = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="gateway replica behind the dispatcher">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:gateway@127.0.0.1:EDGE_PORT>
Content-Length: 0
  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
  ]]></send>
</scenario>
"""

_RECEIVED = re.compile(r"message received \[\d+\] bytes :\s*\n\s*\n(\w+) ", re.MULTILINE)


def _kamailio() -> str:
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
    if found is None:
        pytest.fail("kamailio is missing: tools/test-packages installs it (Debian's kamailio)")
    return found


def _edge_config(tmp: Path, edge: int, replicas: list[int]) -> Path:
    """kamailio.cfg on loopback port ``edge``, dispatching to ``replicas``."""
    listing = tmp / "dispatcher.list"
    listing.write_text("".join(f"1 sip:127.0.0.1:{port} 0 0\n" for port in replicas))
    text = (DISPATCHER / "kamailio.cfg").read_text()
    for old, new in (
        ("/etc/kamailio/dispatcher.list", str(listing)),
        ("0.0.0.0:5060", f"127.0.0.1:{edge}"),
        ("SIP_ADVERTISED_HOST:5060", f"SIP_ADVERTISED_HOST:{edge}"),
        # No OPTIONS probes during the test: sipp replicas would count them as calls.
        ('"ds_ping_interval", 10', '"ds_ping_interval", 0'),
    ):
        assert old in text, f"kamailio.cfg no longer contains {old!r}"
        text = text.replace(old, new)
    config = tmp / "kamailio.cfg"
    config.write_text(text)
    return config


def _answers_options(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.bind(("127.0.0.1", 0))
        own = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch=z9hG4bK-ready\r\n"
            "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
            "Call-ID: ready@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), ("127.0.0.1", port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def _requests_received(trace: Path) -> list[str]:
    return _RECEIVED.findall(trace.read_text(errors="replace")) if trace.exists() else []


async def test_every_message_of_a_call_reaches_the_replica_of_its_invite(tmp_path: Path) -> None:
    kamailio = _kamailio()
    edge = free_both()
    replicas = []
    directories = []
    for index in range(2):
        directory = tmp_path / f"replica-{index}"
        directory.mkdir()
        directories.append(directory)
        scenario = write(directory, "replica.xml", REPLICA.replace("EDGE_PORT", str(edge)))
        replicas.append(
            await start_sipp(
                ["-sf", scenario, "-trace_msg", "-message_file", str(directory / "messages")],
                directory,
                timeout=180,
            )
        )
    config = _edge_config(tmp_path, edge, [replica.port for replica in replicas])
    log = tmp_path / "kamailio.log"
    with log.open("wb") as sink:
        proxy = await asyncio.create_subprocess_exec(
            *[kamailio, "-DD", "-E", "-m", "64", "-M", "8", "-f", str(config)],
            *["-Y", str(tmp_path), "-P", str(tmp_path / "kamailio.pid")],
            env={**os.environ, "SIP_ADVERTISED_HOST": "127.0.0.1"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(_answers_options, edge):
            assert proxy.returncode is None, "kamailio exited:\n" + log.read_text()[-4000:]
            assert time.monotonic() < deadline, "kamailio did not answer OPTIONS in 30 s"
        carrier = tmp_path / "carrier"
        carrier.mkdir()
        code, output = await run_sipp(
            [f"127.0.0.1:{edge}", "-sn", "uac", "-m", str(CALLS), "-r", "20", "-d", "100"],
            carrier,
            timeout=120,
        )
        successful, failed = call_counts(output)
        assert (code, successful, failed) == (0, CALLS, 0), output
    finally:
        if proxy.returncode is None:
            proxy.terminate()
            try:
                await asyncio.wait_for(proxy.wait(), timeout=10)
            except TimeoutError:
                proxy.kill()
                await proxy.wait()
        for replica in replicas:
            replica.kill()
            await replica.process.wait()
    received = [_requests_received(d / "messages") for d in directories]
    invites = [requests.count("INVITE") for requests in received]
    byes = [requests.count("BYE") for requests in received]
    acks = [requests.count("ACK") for requests in received]
    assert sum(invites) == CALLS
    assert byes == invites, f"BYEs per replica {byes}, INVITEs {invites}"
    assert acks == invites, f"ACKs per replica {acks}, INVITEs {invites}"
    assert all(count > 0 for count in invites), f"the Call-ID hash used one replica: {invites}"
