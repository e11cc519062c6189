"""``kill -9`` of the dialer in the middle of a campaign, on the running platform (issue 7):
after the supervisor starts it again, no contact is dialled while an earlier dial of it is
still in flight, no dial reaches the carrier twice, and every contact is dialled to its
last attempt (none forgotten, attempt numbers without a gap).

The customers' network is ``sipp`` playing a UAS that rings for 4 s and then answers busy,
so dials are in flight when the dialer dies. Six agents of the demo tenant are available
(progressive pacing: six dials at a time); nobody answers, so they stay available. What
happened is read back from the gateway's and the dialer's event stores."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import asyncpg
import grpc
import psutil
import pytest
from plateau_e2e import PlateauUp, admin_dsn, cli_env, make_home, run_cli

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as desk_grpc
from plateau_runtime.embedded import free_port
from plateau_sip_gateway.testing.sipp import free_media_ports, sipp_binary

pytestmark = pytest.mark.e2e

CONTACTS = 30
MAX_ATTEMPTS = 2
AGENTS = ("a-1001", "a-1002", "a-1003", "a-1004", "a-1005", "a-1006")

#: A customer who is on another call: 180, four seconds of ringing, 486, ACK.
BUSY_CUSTOMER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy customer">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[

SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <pause milliseconds="4000"/>
  <send><![CDATA[

SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""


def _numbers() -> list[str]:
    return [f"+2420660{i:05d}" for i in range(1, CONTACTS + 1)]


async def _fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def _value(dsn: str, query: str) -> int:
    [row] = asyncio.run(_fetch(dsn, query))
    return int(row[0])


def _wait(check: object, what: str, up: PlateauUp, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n" + up.output()[-3000:]
        time.sleep(0.3)


def _events(dsn: str, schema: str, *kinds: str) -> list[tuple[str, dict[str, object]]]:
    rows = asyncio.run(
        _fetch(
            dsn,
            f"select type, data from {schema}.events where type = any($1) order by position",
            list(kinds),
        )
    )
    return [(r["type"], json.loads(r["data"])) for r in rows]


def _agents_available(port: int) -> None:
    async def go() -> None:
        metadata = (("x-plateau-tenant", "demo"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = desk_grpc.AgentDeskStub(channel)
            for agent_id in AGENTS:
                await stub.Login(desk.LoginRequest(agent_id=agent_id), metadata=metadata)
                await stub.SetAvailable(
                    desk.SetAvailableRequest(agent_id=agent_id), metadata=metadata
                )

    asyncio.run(go())


def _dialer_process(up: PlateauUp) -> psutil.Process:
    for process in up.descendants():
        if "plateau_dialer" in " ".join(process.cmdline()):
            return process
    raise AssertionError("no dialer process under plateau up\n" + up.output()[-3000:])


def test_kill_9_of_the_dialer_neither_redials_a_contact_in_flight_nor_forgets_one(
    tmp_path: Path,
) -> None:
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
                        "entry_points": {"+242053000100": "q-general"},
                        "capacity": {"kind": "calls", "max_calls": 40},
                        "options_interval_s": 0,
                    }
                ]
            }
        )
    )
    (tmp_path / "busy.xml").write_text(BUSY_CUSTOMER)
    home = make_home()
    env = cli_env(home, PLATEAU_SIP_TRUNKS_FILE=str(trunks))
    up = PlateauUp(env)
    customers = subprocess.Popen(
        [
            *(sipp_binary(), "-sf", "busy.xml", "-i", "127.0.0.1", "-p", str(customer_port)),
            *("-mp", str(free_media_ports()), "-nostdin", "-timeout", "600s"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        dsn = admin_dsn(home)
        created = run_cli(
            *("campaign", "create", "crash", "--queue", "q-general", "--window", "00:00-23:59"),
            *("--days", "mon,tue,wed,thu,fri,sat,sun", "--pacing", "progressive"),
            *("--max-attempts", str(MAX_ATTEMPTS), "--retry-after", "0", "--ring-timeout", "20"),
            env=env,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        clients = tmp_path / "clients.csv"
        clients.write_text("phone\n" + "\n".join(_numbers()) + "\n")
        imported = run_cli("campaign", "import", str(clients), "--campaign", "crash", env=env)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        started = run_cli("campaign", "start", "crash", env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        # The gateway must know the list before the first dial (else it refuses, and the
        # refusal spends an attempt): created, started and every contact allowed.
        _wait(
            lambda: _value(dsn, "select count(*) from sip_gateway.allowlist_facts") >= CONTACTS + 2,
            "the allow-list to reach the gateway",
            up,
        )
        _agents_available(int(env["PLATEAU_ACD_GRPC_PORT"]))

        in_flight = "select count(*) from dialer.dial_attempts where result is null"
        _wait(lambda: _value(dsn, in_flight) >= 3, "dials in flight", up)
        done_before = _value(dsn, "select count(*) from dialer.dial_attempts")
        dialer = _dialer_process(up)
        dialer.send_signal(signal.SIGKILL)
        dialer.wait(10)
        assert up.wait_for("dialer restarted", timeout=60), up.output()[-4000:]
        assert _dialer_process(up).pid != dialer.pid

        _wait(
            lambda: (
                _value(dsn, "select count(*) from dialer.dial_plans where done is not null")
                == CONTACTS
            ),
            "every contact dialled to its last attempt",
            up,
            timeout=300,
        )
        assert done_before < CONTACTS * MAX_ATTEMPTS  # the kill was mid-campaign

        gateway = _events(dsn, "sip_gateway", "call.originated", "call.dial_completed")
        originated = [d for kind, d in gateway if kind == "call.originated"]
        # Each attempt reached the carrier once (a resent request id was answered, not
        # dialled again).
        repeated = [a for a, n in Counter(d["attempt_id"] for d in originated).items() if n > 1]
        assert repeated == []
        # Per contact, each dial ended before the next one started: never two at once.
        contact_of = {d["attempt_id"]: d["contact_id"] for d in originated}
        timeline: dict[object, list[tuple[str, object]]] = defaultdict(list)
        for kind, data in gateway:
            timeline[contact_of[data["attempt_id"]]].append((kind, data["attempt_id"]))
        for contact, steps in timeline.items():
            expected = [
                step
                for attempt in dict.fromkeys(a for _, a in steps)
                for step in (("call.originated", attempt), ("call.dial_completed", attempt))
            ]
            assert steps == expected, (contact, steps)
        assert len(timeline) == CONTACTS

        dialer_events = _events(dsn, "dialer", "dial.attempted", "dial.compliance_checked")
        attempted = [d for kind, d in dialer_events if kind == "dial.attempted"]
        checked = [d for kind, d in dialer_events if kind == "dial.compliance_checked"]
        # The dialer's record agrees with the carrier's: one record per dial, each checked.
        assert sorted(d["attempt_id"] for d in attempted) == sorted(contact_of)
        assert {d["attempt_id"] for d in checked if d["decision"] == "allowed"} == set(contact_of)
        numbers: dict[object, list[object]] = defaultdict(list)
        for data in attempted:
            numbers[data["contact_id"]].append(data["attempt_number"])
        assert {c: sorted(n) for c, n in numbers.items()} == {
            c: list(range(1, MAX_ATTEMPTS + 1)) for c in contact_of.values()
        }
        assert {d["number"] for d in attempted} == set(_numbers())
        outcomes = {
            r["done"] for r in asyncio.run(_fetch(dsn, "select done from dialer.dial_plans"))
        }
        assert outcomes == {"max_attempts_reached"}
    finally:
        customers.kill()
        customers.wait()
        code = up.stop()
        if code != 0:
            up.kill_everything()
        shutil.rmtree(home.parent, ignore_errors=True)
    assert code == 0
