"""An outbound campaign on the running platform, the way an operator runs one: ``plateau
campaign create``, ``plateau campaign import`` of an Excel-made file, ``start`` — then the
gateway (another process, fed over the broker) dials only the file's numbers: an allowed
one rings ``sipp`` playing the customer's network, any other is refused and recorded, and
once the campaign is stopped even the file's numbers are refused."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from plateau_e2e import PlateauUp, admin_dsn, cli_env, make_home, run_cli

from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.embedded import free_port
from plateau_sip_gateway.testing.sipp import free_media_ports, sipp_binary

pytestmark = pytest.mark.e2e

FILE = (
    "Référence;Abonné;Téléphone\r\n"
    "A-1;Élodie;06 612 34 56\r\n"
    "A-2;Noël;+242 05 512 34 56\r\n"
    "A-3;Zoé;pas de numéro\r\n"
).encode("cp1252")


async def _allowlist_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "select count(*) from sip_gateway.allowlist_facts where tenant = 'demo'"
            )
        )
    finally:
        await conn.close()


async def _gateway_events(dsn: str, kind: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select data from sip_gateway.events where type = $1 order by position", kind
        )
        return [json.loads(r["data"]) for r in rows]
    finally:
        await conn.close()


def _wait(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not asyncio.run(check()):  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _originate(port: int, number: str) -> grpc.aio.AioRpcError | str:
    async def call() -> str:
        request = pb.OriginateRequest(
            request_id=secrets.token_hex(6),
            campaign_id="renewals",
            contact_id="from-test",
            attempt_id=secrets.token_hex(6),
            number=number,
            requested_by=pb.REQUESTER_INTEGRATOR,
            requester="e2e",
        )
        request.ring_timeout.FromSeconds(15)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await pb_grpc.CallControlStub(channel).Originate(
                request, metadata=(("x-plateau-tenant", "demo"),), timeout=10
            )
        return str(response.call_id)

    try:
        return asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        return exc


def test_only_the_imported_file_is_dialled_and_a_stop_withdraws_it(tmp_path: Path) -> None:
    customer_port = free_port()
    trunks = tmp_path / "trunks.json"
    trunks.write_text(
        json.dumps(
            {
                "trunks": [
                    {
                        "name": "carrier",
                        "tenant": "demo",
                        "source_networks": ["127.0.0.1/32"],
                        "outbound": [{"host": "127.0.0.1", "port": customer_port}],
                        "entry_points": {"+242053000100": "sales"},
                        "capacity": {"kind": "calls", "max_calls": 10},
                        "options_interval_s": 0,
                    }
                ]
            }
        )
    )
    home = make_home()
    env = cli_env(home, PLATEAU_SIP_TRUNKS_FILE=str(trunks))
    gateway_port = int(env["PLATEAU_SIP_GATEWAY_GRPC_PORT"])
    up = PlateauUp(env)
    # sipp's built-in UAS plays the customer: 180, 200 with the SDP offer, ACK, BYE.
    customer = subprocess.Popen(
        [
            sipp_binary(),
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(customer_port),
            "-mp",
            str(free_media_ports()),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "120s",
            "-timeout_error",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        dsn = admin_dsn(home)
        created = run_cli(
            *("campaign", "create", "renewals", "--queue", "sales", "--window", "00:00-23:59"),
            *("--days", "mon,tue,wed,thu,fri,sat,sun"),
            env=env,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        assert "campaign renewals: created" in created.stdout

        refused_start = run_cli("campaign", "start", "renewals", env=env)
        assert refused_start.returncode == 2
        assert "import a customer file" in refused_start.stderr

        clients = tmp_path / "clients.csv"
        clients.write_bytes(FILE)
        imported = run_cli("campaign", "import", str(clients), "--campaign", "renewals", env=env)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "list version 1" in imported.stdout
        assert "read as cp1252, separator ';'" in imported.stdout
        assert "3 rows: 2 accepted, 1 rejected" in imported.stdout
        assert "line 4 [Téléphone]: has_letters" in imported.stdout

        broken = tmp_path / "broken.csv"
        broken.write_bytes(b"nom;ville\nAnge;Brazzaville\n")
        refused = run_cli("campaign", "import", str(broken), "--campaign", "renewals", env=env)
        assert refused.returncode == 2
        assert "no phone column" in refused.stderr

        started = run_cli("campaign", "start", "renewals", env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "running, list version 1, 2 contacts" in started.stdout
        assert "2 to dial or retry" in started.stdout

        # The gateway learns the list over the broker: campaign created and started, two
        # contacts allowed.
        _wait(lambda: _count_at_least(dsn, 4), "the allow-list to reach the gateway")
        call_id = _originate(gateway_port, "+242066123456")
        assert isinstance(call_id, str), call_id
        out, _ = customer.communicate(timeout=60)
        assert customer.returncode == 0, out.decode(errors="replace")[-3000:]

        refused_dial = _originate(gateway_port, "+242066999999")
        assert isinstance(refused_dial, grpc.aio.AioRpcError)
        assert refused_dial.code() == grpc.StatusCode.PERMISSION_DENIED

        stopped = run_cli("campaign", "stop", "renewals", "--reason", "done", env=env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        # created, started, 2 allowed, stopped, 2 withdrawn
        _wait(lambda: _count_at_least(dsn, 7), "the withdrawals to reach the gateway")
        after_stop = _originate(gateway_port, "+242066123456")
        assert isinstance(after_stop, grpc.aio.AioRpcError)
        assert after_stop.code() == grpc.StatusCode.PERMISSION_DENIED

        _wait(lambda: _refusals(dsn, 2), "both refusals recorded")
        compliance = asyncio.run(_gateway_events(dsn, "call.compliance_abandoned"))
        # No agent was there for the customer who answered: abandoned after 2 s, counted.
        assert len(compliance) == 1
    finally:
        customer.kill()
        customer.wait()
        assert up.stop() == 0
        shutil.rmtree(home.parent, ignore_errors=True)


async def _count_at_least(dsn: str, count: int) -> bool:
    return await _allowlist_rows(dsn) >= count


async def _refusals(dsn: str, count: int) -> bool:
    return len(await _gateway_events(dsn, "call.dial_refused")) >= count
