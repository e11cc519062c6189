"""SIP endpoint throughput: a UAS on the gateway's Endpoint under ``sipp -sn uac``, next
to ``sipp`` talking straight to ``sipp`` in the same run (the baseline).

Run from the checkout:  .venv/bin/python bench/sip_transport.py [RATE ...]

For each rate (calls/s, default 100 200 400) and each transport (UDP, TCP) it places
``RATE * SECONDS`` calls (INVITE, 180, 200, ACK, BYE, 200) and prints the achieved calls/s,
failed calls and the UAS process's CPU milliseconds per call. Figures only: nothing here
asserts a speed. Needs ``sipp`` (Debian package sip-tester).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from plateau_sip_gateway.sip.endpoint import Endpoint, EndpointSettings
from plateau_sip_gateway.sip.transaction import InviteServerTransaction, ServerTransaction

SECONDS = 5
_COUNTER = re.compile(r"(Successful|Failed) call\s*\|\s*\d+\s*\|\s*(\d+)")


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sipp_args(transport: str) -> list[str]:
    kind = socket.SOCK_STREAM if transport == "TCP" else socket.SOCK_DGRAM
    args = ["-nostdin", "-i", "127.0.0.1", "-p", str(free_port(kind))]
    args += ["-mp", str(free_port(socket.SOCK_DGRAM))]
    return [*args, "-t", "t1"] if transport == "TCP" else args


async def run_uac(
    sipp: str, target: str, transport: str, rate: int, cwd: Path
) -> tuple[int, int, float]:
    """Run the sipp UAC: (successful calls, failed calls, seconds)."""
    calls = rate * SECONDS
    args = ["-sn", "uac", target, *sipp_args(transport), "-m", str(calls), "-r", str(rate)]
    args += ["-l", str(rate * 4), "-timeout", "60s"]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sipp,
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    counts = dict.fromkeys(("Successful", "Failed"), 0)
    for kind, value in _COUNTER.findall(output.decode(errors="replace")):
        counts[kind] = int(value)  # the last screen printed holds the totals
    return counts["Successful"], counts["Failed"], elapsed


def serve(endpoint: Endpoint) -> None:
    async def handle(tx: ServerTransaction) -> None:
        host, port = endpoint.local_address(tx.request.top_via.transport)
        contact = ("Contact", f"<sip:uas@{host}:{port}>")
        if isinstance(tx, InviteServerTransaction):
            tx.respond(tx.create_response(180, headers=(contact,)))
            await endpoint.send_2xx(tx, tx.create_response(200, headers=(contact,)))
        else:
            tx.respond(tx.create_response(200))

    endpoint.on_request(handle)


async def main(rates: list[int]) -> None:
    sipp = shutil.which("sipp")
    if sipp is None:
        sys.exit("sipp is not installed: apt-get install sip-tester")
    cwd = Path(tempfile.mkdtemp(prefix="plateau-bench-sip-"))
    print(
        f"{'peer':<22}{'transport':<10}{'rate':>6}{'calls/s':>10}{'failed':>8}{'cpu ms/call':>13}"
    )
    try:
        for transport in ("UDP", "TCP"):
            for rate in rates:
                endpoint = await Endpoint.listen(EndpointSettings(host="127.0.0.1"))
                serve(endpoint)
                host, port = endpoint.local_address(transport)
                cpu = time.process_time()
                ok, failed, elapsed = await run_uac(sipp, f"{host}:{port}", transport, rate, cwd)
                cpu_ms = (time.process_time() - cpu) * 1000 / max(1, ok + failed)
                await endpoint.close()
                print(
                    f"{'Endpoint UAS':<22}{transport:<10}{rate:>6}{ok / elapsed:>10.1f}"
                    f"{failed:>8}{cpu_ms:>13.2f}"
                )
                uas_port = free_port(
                    socket.SOCK_STREAM if transport == "TCP" else socket.SOCK_DGRAM
                )
                uas_args = ["-sn", "uas", *sipp_args(transport)]
                uas_args[uas_args.index("-p") + 1] = str(uas_port)
                uas = await asyncio.create_subprocess_exec(
                    sipp,
                    *uas_args,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await asyncio.sleep(0.5)
                ok, failed, elapsed = await run_uac(
                    sipp, f"127.0.0.1:{uas_port}", transport, rate, cwd
                )
                uas.terminate()
                await uas.wait()
                print(
                    f"{'sipp uas (baseline)':<22}{transport:<10}{rate:>6}"
                    f"{ok / elapsed:>10.1f}{failed:>8}{'-':>13}"
                )
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [100, 200, 400]))
