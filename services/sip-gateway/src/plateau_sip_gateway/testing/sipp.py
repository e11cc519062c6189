"""sipp as the gateway's peers: scenarios and processes, for tests and benchmarks.

One home for the sipp scenarios (the carrier's INVITE, ACK, BYE and CANCEL, agents that
answer, ring out or reject, an agent's REGISTER with digest auth) and for running sipp:
``start_sipp``/``run_sipp`` bound each run by sipp's own global timeout and kill a sipp
that overruns it or whose caller is cancelled, so none is left behind. Used by the
gateway's integration tests, the end-to-end tests and ``bench/sip_inbound.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: What a carrier's ``-trace_rtt`` times: INVITE -> 200 or INVITE -> 180.
Measure = Literal["answer", "post_dial_delay"]

SIPP_TIMEOUT = 120.0

_COUNTER = re.compile(r"(Successful|Failed) call\s*\|\s*\d+\s*\|\s*(\d+)")


class SippMissingError(RuntimeError):
    """sipp is not installed."""


def sipp_binary() -> str:
    """The path of sipp; SippMissingError says which Debian package to install."""
    path = shutil.which("sipp")
    if path is None:
        raise SippMissingError("sipp is not installed: install the Debian package sip-tester")
    return path


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free on ``host`` for ``kind`` (UDP by default) at the time of asking."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_media_ports(host: str = "127.0.0.1") -> int:
    """A base for sipp's ``-mp``: sipp binds audio RTP/RTCP on it and the next port, and
    video RTP/RTCP on the two after; all four must be free or sipp refuses to start."""
    for _ in range(100):
        base = free_port(host=host)
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind((host, base + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no four consecutive UDP ports free for sipp's media")


def free_both(host: str = "127.0.0.1") -> int:
    """A port free for UDP and TCP both (the gateway's SIP listens on the two)."""
    for _ in range(50):
        port = free_port(host=host)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


_ASSIGNED = re.compile(r'assign_to="(\w+)"')
_READ = re.compile(r"\[\$(\w+)\]")


def write(cwd: Path, name: str, text: str) -> str:
    """Write a scenario into ``cwd``; its path, as sipp's ``-sf`` takes it.

    sipp refuses a scenario with a variable that is assigned and never read; the ones only
    assigned (by ``check_it`` regexps, which fail the call when they do not match) are
    declared read with a ``<Reference>``.
    """
    only_assigned = sorted(set(_ASSIGNED.findall(text)) - set(_READ.findall(text)))
    if only_assigned:
        reference = f'  <Reference variables="{",".join(only_assigned)}"/>\n</scenario>'
        text = text.replace("</scenario>", reference)
    path = cwd / name
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return str(path)


@dataclass
class Sipp:
    """A running sipp: its process, SIP port and start time."""

    process: asyncio.subprocess.Process
    port: int
    started: float
    timeout: float = SIPP_TIMEOUT

    async def result(self, timeout: float | None = None) -> tuple[int, str]:
        """Its exit code and the end of its output, once it ends (killed at ``timeout``,
        or when the caller is cancelled)."""
        try:
            async with asyncio.timeout(timeout or self.timeout):
                output, _ = await self.process.communicate()
        except TimeoutError:
            self.process.kill()
            output, _ = await self.process.communicate()
        finally:
            if self.process.returncode is None:
                self.process.kill()
        code = self.process.returncode if self.process.returncode is not None else -1
        return code, output.decode(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_sipp(
    args: list[str],
    cwd: Path,
    *,
    port: int | None = None,
    ip: str = "127.0.0.1",
    timeout: float = SIPP_TIMEOUT,
) -> Sipp:
    """Start sipp with ``args`` on ``port`` (free if None); it stops itself, failing,
    10 s before ``timeout``."""
    port = port or free_port(host=ip)
    process = await asyncio.create_subprocess_exec(
        sipp_binary(),
        *args,
        *["-i", ip, "-p", str(port), "-nostdin", "-mp", str(free_media_ports(ip))],
        *["-timeout", f"{max(int(timeout) - 10, 1)}s", "-timeout_error"],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    return Sipp(process, port, time.monotonic(), timeout)


async def run_sipp(args: list[str], cwd: Path, **kwargs: object) -> tuple[int, str]:
    """Run sipp to its end: its exit code and the end of its output."""
    sipp = await start_sipp(args, cwd, **kwargs)  # type: ignore[arg-type]
    return await sipp.result()


def call_counts(output: str) -> tuple[int, int]:
    """Successful and failed calls, as sipp's final statistics screen counts them."""
    counts = dict.fromkeys(("Successful", "Failed"), 0)
    for kind, value in _COUNTER.findall(output):
        counts[kind] = int(value)
    return counts["Successful"], counts["Failed"]


def read_rtt(cwd: Path, scenario: str) -> list[float]:
    """The response times (ms) sipp's ``-trace_rtt`` wrote in ``cwd`` for the scenario
    file named ``scenario`` (without ``.xml``)."""
    times: list[float] = []
    for path in cwd.glob(f"{scenario}_*_rtt.csv"):
        with path.open() as rows:
            for row in csv.reader(rows, delimiter=";"):
                with contextlib.suppress(IndexError, ValueError):
                    times.append(float(row[1]))
    return times


@contextlib.asynccontextmanager
async def sipp_agent(
    cwd: Path, scenario: str, *, trace: bool = False, timeout: float = 3600.0
) -> AsyncIterator[Sipp]:
    """A sipp playing an agent ``scenario`` until the block ends (then killed).
    ``trace`` keeps its error log (unexpected messages, aborted calls) in ``cwd``."""
    path = write(cwd, "agent.xml", scenario)
    agent = await start_sipp(
        ["-sf", path, *(["-trace_err"] if trace else [])], cwd, timeout=timeout
    )
    try:
        yield agent
    finally:
        agent.kill()
        await agent.process.wait()


SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""

INVITE = (
    """
    <send retrans="500">
      <![CDATA[
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

"""
    + SDP
    + """
      ]]>
    </send>
    <recv response="100" optional="true"/>
    <recv response="180"/>
"""
)


def _carrier_in_dialog(method: str, cseq: int, retrans: str) -> str:
    """The carrier's in-dialog request ``method`` (ACK, BYE) to the gateway."""
    return f"""
    <send{retrans}>
      <![CDATA[
{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
Max-Forwards: 70
Content-Length: 0
      ]]>
    </send>
"""


ACK_2XX = _carrier_in_dialog("ACK", 1, "")

BYE = _carrier_in_dialog("BYE", 2, ' retrans="500"') + '    <recv response="200" crlf="true"/>\n'

#: The ACK of a non-2xx final response: sipp writes it as it writes the ACK of a 2xx.
ACK_ERROR = ACK_2XX

#: 200 OK to the request just received (a BYE), its headers copied.
_OK_TO_LAST = """    <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>"""


def carrier_talks(
    pause_ms: int = 500, answer_timeout_ms: int = 30000, measure: Measure = "answer"
) -> str:
    """Carrier: INVITE, ringback, 200 (once an agent answers), ACK, talk, BYE.

    ``measure`` says what ``-trace_rtt`` times: INVITE -> 200 (``answer``, the agent leg
    included) or INVITE -> 180 (``post_dial_delay``). A call not answered within
    ``answer_timeout_ms`` fails.
    """
    invite, answer_rtd = INVITE, ' rtd="true"'
    if measure == "post_dial_delay":
        invite = INVITE.replace('<send retrans="500">', '<send retrans="500" start_rtd="pdd">', 1)
        invite = invite.replace('<recv response="180"/>', '<recv response="180" rtd="pdd"/>')
        answer_rtd = ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier talks">
{invite}
    <recv response="180" optional="true"/>
    <recv response="200"{answer_rtd} timeout="{answer_timeout_ms}"/>
{ACK_2XX}
    <pause milliseconds="{pause_ms}"/>
{BYE}
</scenario>"""


def carrier_hears_bye(answer_timeout_ms: int = 30000) -> str:
    """Carrier: INVITE, ringback, 200, ACK, then the gateway hangs up (BYE)."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier hears bye">
{INVITE}
    <recv response="180" optional="true"/>
    <recv response="200" timeout="{answer_timeout_ms}"/>
{ACK_2XX}
    <recv request="BYE" timeout="{answer_timeout_ms}"/>
{_OK_TO_LAST}
</scenario>"""


def carrier_cancels(after_ms: int) -> str:
    """Carrier: INVITE, ringback, hang up before an answer (CANCEL), 487, ACK."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier cancels">
{INVITE}
    <pause milliseconds="{after_ms}"/>
    <send retrans="500"><![CDATA[
CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0
]]></send>
    <recv response="200"/>
    <recv response="487"/>
{ACK_ERROR}
</scenario>"""


def carrier_refused(code: int, ringback: bool = False, timeout_ms: int = 30000) -> str:
    """Carrier: INVITE answered with ``code`` (after ringback or not), ACK."""
    ring = INVITE if ringback else INVITE.replace('<recv response="180"/>', "")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier refused {code}">
{ring}
    <recv response="{code}" timeout="{timeout_ms}"/>
{ACK_ERROR}
</scenario>"""


def register(extension: str, password: str, contact_port: int) -> str:
    """An agent's REGISTER with digest auth, binding a contact on ``contact_port``."""
    message = f"""
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{extension}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{extension}@[remote_ip]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:{extension}@127.0.0.1:{contact_port}>
Max-Forwards: 70
Expires: 3600
"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register {extension}">
  <send retrans="500"><![CDATA[{message}Content-Length: 0
]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[{message}[authentication username={extension} password={password}]
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>"""


AGENT_SDP = SDP.replace("user1", "agent")


_AGENT_ANSWER = (
    """<![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

"""
    + AGENT_SDP
    + """
]]></send>"""
)

_AGENT_HEARS_BYE = """
  <recv request="BYE"/>
""" + _OK_TO_LAST.replace("    <send>", "  <send>", 1)


def agent_answers() -> str:
    """Agent softphone: INVITE -> 180, 200; ACK; then BYE from either side."""
    return _agent(f"""
  <send>{_AGENT_ANSWER}
  <recv request="ACK"/>{_AGENT_HEARS_BYE}""")


OK_IN_DIALOG = """
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>"""


def agent_answers_then(steps: str, name: str = "agent") -> str:
    """Agent softphone that answers at once and then plays ``steps``: its own requests in
    the dialog may use ``[$gw_uri]`` (the gateway's Contact) and ``[$gw_from]`` (the
    gateway's From, for their To), both remembered from the INVITE."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="gw_from"/>
      <ereg regexp="sip:[^>]*" search_in="hdr" header="Contact:" assign_to="gw_uri"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{AGENT_SDP}
]]></send>
  <recv request="ACK"/>
{steps}
</scenario>"""


def agent_answers_at_once() -> str:
    """Agent softphone under load: INVITE -> 200 at once (retransmitted until the ACK or
    BYE), then BYE from either side.

    No 180: sipp recognises a retransmitted request only when it sent a single message
    after it. With 180 then 200 (as here in ``agent_answers`` and in sipp's ``-sn uas``),
    an INVITE the gateway retransmits (Timer A, when a burst delays the answer) arrives
    while sipp waits for the ACK: sipp aborts that call and ignores the leg from then on,
    so the caller rings until the ring timeout.
    """
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="agent">
  <recv request="INVITE"/>
  <send retrans="500">{_AGENT_ANSWER}
  <recv request="ACK" optional="true"/>{_AGENT_HEARS_BYE}
</scenario>"""


def agent_rings_out() -> str:
    """Agent softphone that rings until the gateway CANCELs: 200 to CANCEL, 487, ACK."""
    return _agent(
        """
  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv request="ACK"/>"""
    )


def agent_rejects(code: int = 486) -> str:
    """Agent softphone that refuses the call with ``code``."""
    return _agent(
        f"""
  <send><![CDATA[
SIP/2.0 {code} Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="ACK"/>"""
    )


def asked_to_auto_answer(scenario: str, asked: bool = True) -> str:
    """An agent ``scenario`` whose INVITE must (``asked``) or must not carry RFC 7462's
    auto-answer Alert-Info; sipp fails the call otherwise."""
    check = "check_it" if asked else "check_it_inverse"
    return scenario.replace(
        '<recv request="INVITE"/>',
        '<recv request="INVITE"><action><ereg regexp="urn:alert:service:auto-answer" '
        f'search_in="msg" {check}="true" assign_to="auto_answer"/></action></recv>',
        1,
    )


def _agent(after_ringing: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="agent">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Length: 0
]]></send>
{after_ringing}
</scenario>"""


def agent_answers_and_hangs_up(talk_ms: int = 1000) -> str:
    """Agent softphone of an outbound campaign: INVITE -> 200 at once, talks ``talk_ms``,
    then hangs up (its own BYE, to the gateway's Contact)."""
    return agent_answers_then(
        f"""
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500"><![CDATA[
BYE [$gw_uri] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:agent@127.0.0.1>;tag=[pid]a[call_number]
To: [$gw_from]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" timeout="10000"/>""",
        name="agent talks then hangs up",
    )


def customers(busy: str, never_answers: str, answer_after_ms: int = 100) -> str:
    """The customers' network behind an outbound trunk, one behaviour per dialled number
    (``<ereg>`` on the request line, regular expressions matching the number): a number
    matching ``busy`` answers 486; one matching ``never_answers`` rings until the gateway
    CANCELs; any other answers after ``answer_after_ms`` with the SDP offer (RFC 3725
    flow I: the ACK carries the answer) and waits for the gateway's BYE."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customers">
  <recv request="INVITE">
    <action>
      <ereg regexp="^INVITE sip:{busy}@" search_in="msg" assign_to="busy"/>
      <ereg regexp="^INVITE sip:{never_answers}@" search_in="msg" assign_to="silent"/>
    </action>
  </recv>
  <nop next="1" test="busy"/>
  <nop next="2" test="silent"/>
  <pause milliseconds="{answer_after_ms}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:customer@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{SDP}
]]></send>
  <recv request="ACK"/>
  <!-- The gateway ACKs every 200 that reaches it, retransmissions sent before the first
       ACK arrived included (the ACK waits for the agent). -->
  <recv request="ACK" optional="true"/>
  <recv request="ACK" optional="true"/>
  <recv request="BYE" timeout="60000"/>
{_OK_TO_LAST}
  <nop next="3"/>
  <label id="1"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="ACK"/>
  <nop next="3"/>
  <label id="2"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="CANCEL" timeout="60000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv request="ACK"/>
  <label id="3"/>
</scenario>"""
