"""The running gateway against attackers: sipvicious ``svwar`` cannot tell real extensions
from invented ones, ``svcrack`` with a 1,000-word list containing the password does not
find it, and 10,000 random or truncated datagrams neither crash it nor make it grow."""

from __future__ import annotations

import asyncio
import gc
import random
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from sip_gateway_harness import RunningGateway, free_port, running_gateway

from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

REAL = ["1001", "1002", "1003"]
INVENTED = ["2001", "2002", "2003"]
PASSWORDS = {ext: secrets.token_urlsafe(9) for ext in REAL}
SCAN_TIMEOUT = 120.0


def sipvicious(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the Debian package sipvicious")
    return path


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        service_pool, tmp_path, passwords=PASSWORDS, schema=service_schema.schema
    ) as running:
        yield running


async def run(args: list[str], cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(SCAN_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        pytest.fail(f"{args[0]} did not finish within {SCAN_TIMEOUT:.0f} s")
    return output.decode(errors="replace")


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
async def test_svwar_cannot_tell_real_extensions_from_invented_ones(
    gw: RunningGateway, tmp_path: Path, method: str
) -> None:
    extensions = ",".join(REAL + INVENTED)
    output = await run(
        [
            sipvicious("svwar"),
            "-e",
            extensions,
            "-m",
            method,
            "-p",
            str(gw.sip_port),
            "-b",
            "127.0.0.1",
            "-x",
            "127.0.0.1",
            "-P",
            str(free_port()),
            "--force",
            "127.0.0.1",
        ],
        tmp_path,
    )
    found = set(re.findall(r"\|\s*(\d{4})\s*\|\s*([^|]+?)\s*\|", output))
    reported = {ext for ext, _ in found}
    answers = {answer for _, answer in found}
    assert not (reported & set(REAL)) or set(REAL + INVENTED) <= reported, output
    assert len(answers) <= 1, f"different answers for different extensions:\n{output}"
    print(f"\nsvwar -m {method}: reported {sorted(reported) or 'nothing'}\n{output[-600:]}")


async def test_svcrack_with_the_password_in_its_list_does_not_find_it(
    gw: RunningGateway, tmp_path: Path
) -> None:
    rng = random.Random(3261)
    words = {
        f"{rng.choice(['sun', 'sip', 'pass', 'agent'])}{rng.randrange(10**6)}" for _ in range(1200)
    }
    wordlist = sorted(words)[:999]
    wordlist.insert(700, PASSWORDS["1001"])
    dictionary = tmp_path / "words.txt"
    dictionary.write_text("\n".join(wordlist) + "\n")
    output = await run(
        [
            sipvicious("svcrack"),
            "-u",
            "1001",
            "-d",
            str(dictionary),
            "-p",
            str(gw.sip_port),
            "-b",
            "127.0.0.1",
            "-x",
            "127.0.0.1",
            "-P",
            str(free_port()),
            "127.0.0.1",
        ],
        tmp_path,
    )
    assert PASSWORDS["1001"] not in output, f"svcrack found the password:\n{output}"
    assert len(wordlist) == 1000
    locked = gw.gateway.registrar.gate.guard.tracked()
    print(f"\nsvcrack: password not found; guard tracks (users, sources, trusted) {locked}")


VALID = [
    (
        "INVITE sip:053000100@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{n}\r\n"
        "From: <sip:1@127.0.0.1>;tag={n}\r\n"
        "To: <sip:053000100@127.0.0.1>\r\n"
        "Call-ID: fuzz-{n}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:1@127.0.0.1>"
        "\r\nContent-Type: application/sdp\r\nContent-Length: 24\r\n\r\nv=0\r\no=- 1 1 IN IP4 1\r\n"
    ),
    (
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{n}\r\n"
        "From: <sip:1001@127.0.0.1>;tag={n}\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: r-{n}\r\n"
        "CSeq: 1 REGISTER\r\nContact: <sip:1001@127.0.0.1:5099>\r\nAuthorization: Digest "
        'username="1001",realm="plateau",nonce="x",uri="sip:127.0.0.1",response="00"\r\n'
        "Content-Length: 0\r\n\r\n"
    ),
    (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{n}\r\n"
        "f: <sip:x@127.0.0.1>;tag={n}\r\nt: <sip:127.0.0.1>\r\ni: o-{n}\r\nCSeq: 1 OPTIONS\r\n"
        "l: 0\r\n\r\n"
    ),
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{n}\r\nCSeq: 1 BYE\r\n\r\n",
]


def mutant(rng: random.Random, n: int) -> bytes:
    data = bytearray(rng.choice(VALID).format(n=n).encode())
    kind = rng.randrange(4)
    if kind == 0:  # truncated
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1:  # bytes flipped
        for _ in range(rng.randrange(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:  # lines shuffled, duplicated or dropped
        lines = bytes(data).split(b"\r\n")
        rng.shuffle(lines[1:])
        if rng.random() < 0.5:
            lines.insert(rng.randrange(len(lines)), rng.choice(lines))
        return b"\r\n".join(lines)
    return rng.randbytes(rng.randrange(1, 1500))  # noise


async def send_fuzz(port: int, rng: random.Random, count: int, start: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for n in range(start, start + count):
            sock.sendto(mutant(rng, n), ("127.0.0.1", port))
            if n % 50 == 0:
                await asyncio.sleep(0.005)  # let the gateway read: a flood is another test
                with_drain(sock)
    await asyncio.sleep(0.5)


def with_drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return


async def answers_options(port: int) -> bool:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        sock.setblocking(False)
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: probe-{secrets.token_hex(6)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(sock, request.encode(), ("127.0.0.1", port))
        async with asyncio.timeout(5):
            data = await loop.sock_recv(sock, 65535)
    return data.startswith(b"SIP/2.0 200")


async def test_random_and_truncated_datagrams_neither_crash_nor_grow_the_gateway(
    gw: RunningGateway,
) -> None:
    rng = random.Random(4475)
    process = psutil.Process()
    await send_fuzz(gw.sip_port, rng, 2_000, 0)  # warm-up: caches, first allocations
    gc.collect()
    before = process.memory_info().rss
    await send_fuzz(gw.sip_port, rng, 10_000, 2_000)
    assert await answers_options(gw.sip_port)
    await send_fuzz(gw.sip_port, rng, 10_000, 12_000)
    assert await answers_options(gw.sip_port)
    gc.collect()
    grown = process.memory_info().rss - before
    stats = gw.gateway.endpoint.stats if gw.gateway.endpoint else None
    assert stats is not None and stats.handler_errors == 0
    print(
        f"\nfuzz: 22,000 datagrams; RSS +{grown / 2**20:.1f} MiB; "
        f"answered {stats.malformed_answered}, dropped {stats.malformed_dropped}, "
        f"open calls {gw.gateway.b2bua.open_calls}"
    )
    assert grown < 30 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 20,000 datagrams"
