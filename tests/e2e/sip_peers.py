"""Real SIP peers for the end-to-end tests: the sip-gateway process (the one of
``plateau_sip_gateway.testing.inbound``), ``sipp`` as the carrier, ``baresip`` softphones
registered with digest authentication, and bounded waits. Shared by every e2e test that
places calls (imported, never from conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import socket
import struct
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from plateau_runtime.embedded import EmbeddedBroker
from plateau_sip_gateway.testing.inbound import GatewayProcess, GatewayStartError
from plateau_sip_gateway.testing.inbound import gateway_process as running_gateway
from plateau_sip_gateway.testing.sipp import free_both, free_media_ports, free_port

__all__ = [
    "CARRIER",
    "DNIS",
    "REGISTER",
    "GatewayProcess",
    "baresip_agent",
    "free_both",
    "free_media_ports",
    "free_port",
    "gateway_process",
    "sipp",
    "tool",
    "wait_for",
]

DNIS = "053000100"
GRACE_S = 3.0


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the Debian package {package}")
    return path


_HANDED_OUT: set[int] = set()


def free_sip_ports(host: str = "127.0.0.1") -> int:
    """A port P for a baresip: P free for UDP and TCP, and P+1 free for TCP, where baresip
    puts its SIP/TLS listener. Ports handed out before in this run are never reused, nor
    their neighbours: two softphones started one after the other must not get P and P+1
    (the second would find its TLS port taken and exit)."""
    for _ in range(100):
        port = free_both(host)
        if {port - 1, port, port + 1} & _HANDED_OUT:
            continue
        with socket.socket() as tls:
            try:
                tls.bind((host, port + 1))
            except OSError:
                continue
        _HANDED_OUT.update((port, port + 1))
        return port
    raise RuntimeError("no port pair free for a softphone's SIP (UDP/TCP) and SIP/TLS")


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
def baresip_agent(
    workdir: Path,
    gateway_port: int,
    password: str,
    extension: str = "1001",
    answermode: str = "auto",
) -> Iterator[int]:
    """A registered baresip for ``extension`` (answering automatically unless
    ``answermode="manual"``: then it rings until cancelled); its SIP port."""
    config_dir = workdir / f"baresip-{extension}"
    config_dir.mkdir()
    # baresip hangs up when its audio source ends: longer than any call of the tests.
    tone(config_dir / "tone.wav", seconds=60.0)
    sip_port = free_sip_ports()
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
        f"<sip:{extension}@127.0.0.1:{gateway_port}>;auth_pass={password};"
        f"answermode={answermode};regint=60;audio_codecs=PCMU,PCMA\n"
    )
    log = (workdir / f"baresip-{extension}.log").open("wb")
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


@contextlib.asynccontextmanager
async def gateway_process(
    admin_dsn: str, broker: EmbeddedBroker, workdir: Path, passwords: dict[str, str]
) -> AsyncIterator[GatewayProcess]:
    """``python -m plateau_sip_gateway`` on free ports, for a tenant of its own; a gateway
    that does not start fails the test with its log."""
    try:
        async with running_gateway(admin_dsn, broker.bootstrap, workdir, passwords) as gateway:
            yield gateway
    except GatewayStartError as exc:
        pytest.fail(str(exc))


CARRIER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:carrier@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=carrier 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""

REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{ext}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{ext}@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:{ext}@127.0.0.1:{contact_port}>
Max-Forwards: 70
Expires: 3600
Content-Length: 0
]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{ext}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{ext}@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:{ext}@127.0.0.1:{contact_port}>
[authentication username={ext} password={password}]
Max-Forwards: 70
Expires: 3600
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""


async def sipp(args: list[str], cwd: Path, timeout: float = 180.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        tool("sipp", "sip-tester"),
        *args,
        "-i",
        "127.0.0.1",
        "-nostdin",
        "-mp",
        str(free_media_ports()),
        "-timeout",
        f"{int(timeout) - 10}s",
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
    return process.returncode or 0, output.decode(errors="replace")[-4000:]


async def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
