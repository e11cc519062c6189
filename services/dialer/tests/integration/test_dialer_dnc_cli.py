"""``plateau dnc …`` as an operator runs it (the CLI in its own process) against the
dialer's real ``Campaigns`` servicer and PostgreSQL: add, remove, list, import, the exit
status and message of a bad number, and nothing changed then."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from plateau_dialer.adapters.gateway import GrpcCallControl
from plateau_dialer.campaigns import CampaignCommands
from plateau_dialer.dialing import DialingLoop
from plateau_dialer.do_not_call import DoNotCallList
from plateau_dialer.entrypoints.campaigns import campaigns_service
from plateau_runtime.eventstore import EventStore
from plateau_runtime.grpc_server import GrpcServer
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration


@pytest.fixture
async def target(service_schema: MigratedSchema, service_pool: asyncpg.Pool) -> AsyncIterator[str]:
    store = EventStore(service_pool, service_schema.schema)
    service = campaigns_service(
        CampaignCommands(store, service_pool),
        DoNotCallList(store, service_pool),
        # Never ticks here, so its gateway is never dialled: it only reports progress.
        DialingLoop(store, service_pool, GrpcCallControl("127.0.0.1:1")),
        max_upload_bytes=64 * 1024,
    )
    server = GrpcServer("127.0.0.1", 0, [service])
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


async def plateau(target: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "plateau_cli.main", "dnc", *args, "--target", target, "--tenant", "mno-cg"),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_operator_keeps_the_do_not_call_list_with_plateau_dnc(
    target: str, tmp_path: Path
) -> None:
    code, out, err = await plateau(
        target, "add", "06 612 34 56", "+242 05 512 34 56", "--reason", "asked by phone"
    )
    assert code == 0, err
    assert out.splitlines() == ["+242066123456: added", "+242055123456: added"]

    code, out, err = await plateau(target, "add", "066123456", "appeler après 18h")
    assert code == 2
    assert "'appeler après 18h' is not a number that can be listed" in err
    assert "nothing was changed" in err

    optouts = tmp_path / "optouts.csv"
    optouts.write_bytes(
        "Nom;Téléphone\r\nZoé;06 600 00 01\r\nNoël;06 612 34 56\r\n".encode("cp1252")
    )
    code, out, err = await plateau(target, "import", str(optouts), "--reason", "opt-out week")
    assert code == 0, err
    assert "optouts.csv: 1 numbers added, 1 already on the list" in out
    assert "read as cp1252, separator ';'" in out

    code, out, err = await plateau(target, "remove", "05 512 34 56", "06 999 99 99")
    assert code == 0, err
    assert out.splitlines() == ["+242055123456: removed", "+242069999999: was not on the list"]

    code, out, err = await plateau(target, "list")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines[:-1]] == ["+242066000001", "+242066123456"]
    assert lines[0].split("\t")[2:] == ["file:optouts.csv", "opt-out week"]
    assert lines[1].split("\t")[2:] == ["manual", "asked by phone"]
    assert lines[-1] == "2 numbers on the do-not-call list of mno-cg"

    code, _, err = await plateau(target, "import", str(tmp_path / "missing.csv"))
    assert (code, err.strip()) == (2, f"plateau: no file {tmp_path / 'missing.csv'}")
