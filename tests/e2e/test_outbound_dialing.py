"""A 200-contact outbound campaign end to end over real sockets, on ``plateau up``: the file
imported with ``plateau campaign import``, the dialer pacing it progressively through the
gateway, ``sipp`` playing the customers' network (each number answers, is busy or never
answers, by ``<ereg>`` on the request line), and ``sipp`` playing ten registered agents,
logged in over the acd's ``AgentDesk``, who talk one second and hang up.

It checks what the client would check: every answered contact was offered by the acd to an
agent (``call.agent_reserved``, ``call.connected``) and completed; busy and unanswered
contacts were dialled again no earlier than their retry delay, up to the attempt limit; a
campaign whose calling window is closed dialled nothing; and the compliance ledger
(``dial.compliance_checked``) has exactly one allowed row per dial the gateway placed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import subprocess
import time
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import yaml
from plateau_e2e import PlateauUp, admin_dsn, cli_env, make_home, run_cli

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as desk_grpc
from plateau_runtime.embedded import free_port
from plateau_sip_gateway.testing.sipp import (
    Sipp,
    agent_answers_and_hangs_up,
    customers,
    register,
    run_sipp,
    start_sipp,
    write,
)

pytestmark = pytest.mark.e2e

CONTACTS = 200
BUSY = {i for i in range(CONTACTS) if i % 10 == 3}  # 20 contacts
NO_ANSWER = {7, 77, 147}  # few: each dial rings the whole 15 s
MAX_ATTEMPTS = 2
RETRY_AFTER_S = 5
AGENTS = [f"10{n:02d}" for n in range(1, 11)]  # the demo extensions 1001-1010
ZONE = zoneinfo.ZoneInfo("Africa/Brazzaville")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def number(i: int) -> str:
    """The contact's number as the client wrote it; its third digit says how it behaves."""
    kind = 2 if i in BUSY else 3 if i in NO_ANSWER else 1
    return f"06{kind}{i:06d}"


def e164(i: int) -> str:
    return "+242" + number(i)  # Congo keeps its leading 0 in E.164


def customer_file(path: Path, count: int, first: int = 0) -> None:
    rows = range(first, first + count)
    lines = ["Référence;Téléphone", *(f"C-{i:03d};{number(i)}" for i in rows)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))


def tenant_config(path: Path) -> None:
    """The demo tenant plus a campaign queue without wrap-up and the demo extensions
    1007-1010 as agents (ten in all)."""
    source = Path(__file__).parents[2] / "services/acd/src/plateau_acd/demo_tenant.yaml"
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    tenant = config["tenants"][0]
    tenant["queues"].append(
        {"id": "q-sales", "name": "Renewals", "strategy": "longest_idle", "ring_timeout_s": 10}
        | {"wrap_up_s": 0}
    )
    known = {a["extension"] for a in tenant["agents"]}
    for extension in AGENTS:
        if extension not in known:
            tenant["agents"].append(
                {
                    "id": f"a-{extension}",
                    "name": f"Agent {extension}",
                    "extension": extension,
                    "skills": [{"name": "french", "level": 5}],
                }
            )
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


async def events(dsn: str, schema: str, kind: str) -> list[tuple[dt.datetime, dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"select occurred_at, data from {schema}.events where type = $1 order by position",
            kind,
        )
        return [(r["occurred_at"], json.loads(r["data"])) for r in rows]
    finally:
        await conn.close()


async def facts(
    dsn: str, schema: str, kind: str, campaign: str | None = None
) -> list[dict[str, Any]]:
    found = [d for _, d in await events(dsn, schema, kind)]
    return [d for d in found if campaign is None or d.get("campaign_id") == campaign]


async def wait(
    check: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float,
    explain: Callable[[], Awaitable[str]],
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{await explain()}")
        await asyncio.sleep(1)


async def where_it_stands(dsn: str) -> str:
    """What the platform shows when the campaign does not finish: the gateway's outcomes,
    the dialer's dials still in flight and its view of the agents."""
    outcomes = Counter(d["outcome"] for d in await facts(dsn, "sip_gateway", "call.dial_completed"))
    abandons = len(await facts(dsn, "sip_gateway", "call.compliance_abandoned"))
    conn = await asyncpg.connect(dsn)
    try:
        in_flight = await conn.fetch(
            "select attempt_id, call_id, sent, started_at from dialer.dial_attempts "
            "where result is null"
        )
        floor = await conn.fetch("select agent_id, state from dialer.floor_agents")
        plans = await conn.fetch(
            "select number, attempts, not_before, in_flight, done from dialer.dial_plans "
            "where campaign_id = 'renewals' and (done is null or done <> 'completed')"
        )
        results = await conn.fetch(
            "select result, count(*) from dialer.dial_attempts group by result"
        )
        refused = [
            d
            for d in await facts(dsn, "dialer", "dial.compliance_checked")
            if d["decision"] != "allowed"
        ]
    finally:
        await conn.close()
    return (
        f"gateway outcomes {dict(outcomes)}, compliance abandons {abandons}; "
        f"dials in flight {[dict(r) for r in in_flight]}; "
        f"agents as the dialer sees them {[tuple(r) for r in floor]}; "
        f"contacts not completed {[tuple(r) for r in plans]}; refused checks {refused}; "
        f"dial results {[tuple(r) for r in results]}; "
        f"dials refused {await facts(dsn, 'sip_gateway', 'call.dial_refused')}; "
        f"campaign stops {await facts(dsn, 'dialer', 'campaign.stopped')}"
    )


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``plateau …`` in a thread: the loop keeps reading the sipp processes' output."""
    return await asyncio.to_thread(run_cli, *args, env=env)


async def log_in(port: int, agent_ids: list[str]) -> None:
    metadata = (("x-plateau-tenant", "demo"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = desk_grpc.AgentDeskStub(channel)
        for agent_id in agent_ids:
            await stub.Login(desk.LoginRequest(agent_id=agent_id), metadata=metadata)
            status = await stub.SetAvailable(
                desk.SetAvailableRequest(agent_id=agent_id), metadata=metadata
            )
            assert status.state == desk.AGENT_STATE_AVAILABLE, status


def closed_days() -> str:
    """Every day but today (in the tenant's zone): a window that is closed now."""
    today = DAYS[dt.datetime.now(ZONE).weekday()]
    return ",".join(d for d in DAYS if d != today)


async def create(env: dict[str, str], campaign: str, days: str) -> None:
    created = await cli(
        *("campaign", "create", campaign, "--queue", "q-sales", "--pacing", "progressive"),
        *("--window", "00:00-23:59", "--days", days, "--max-attempts", str(MAX_ATTEMPTS)),
        *("--retry-after", str(RETRY_AFTER_S), "--ring-timeout", "15"),
        env=env,
    )
    assert created.returncode == 0, created.stdout + created.stderr


async def import_and_start(env: dict[str, str], campaign: str, path: Path, rows: int) -> None:
    imported = await cli("campaign", "import", str(path), "--campaign", campaign, env=env)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert f"{rows} rows: {rows} accepted" in imported.stdout, imported.stdout
    started = await cli("campaign", "start", campaign, env=env)
    assert started.returncode == 0, started.stdout + started.stderr


def expected_dials() -> int:
    repeated = len(BUSY) + len(NO_ANSWER)
    return CONTACTS - repeated + repeated * MAX_ATTEMPTS


@pytest.mark.timeout(480)
async def test_two_hundred_contacts_are_dialled_by_the_rules_and_answers_reach_agents(
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
    home = make_home()
    env = cli_env(home, PLATEAU_SIP_TRUNKS_FILE=str(trunks))
    up = PlateauUp(env)
    up_started = time.monotonic()
    network: Sipp | None = None
    agents: Sipp | None = None
    try:
        is_up = await asyncio.to_thread(up.wait_for, "Plateau is up")
        assert is_up, up.output()[-4000:]
        dsn = admin_dsn(home)
        config = tmp_path / "tenant.yaml"
        tenant_config(config)
        applied = await cli("config", "apply", str(config), env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr

        sip = f"127.0.0.1:{env['PLATEAU_SIP_PORT']}"
        expected = expected_dials()
        scenario = customers(busy=r"\+?242062[0-9]{6}", never_answers=r"\+?242063[0-9]{6}")
        network = await start_sipp(
            ["-sf", write(tmp_path, "customers.xml", scenario), "-m", str(expected), "-trace_err"],
            tmp_path,
            port=customer_port,
            timeout=400,
        )
        agent_port = free_port()
        agents = await start_sipp(
            ["-sf", write(tmp_path, "agent.xml", agent_answers_and_hangs_up(1000))],
            tmp_path,
            port=agent_port,
            timeout=400,
        )
        passwords = json.loads((home / "sip-extensions.json").read_text())
        for extension in AGENTS:
            path = write(
                tmp_path,
                f"register-{extension}.xml",
                register(extension, passwords[extension], agent_port),
            )
            code, output = await run_sipp(["-sf", path, "-m", "1", sip], tmp_path)
            assert code == 0, f"REGISTER {extension} failed:\n{output}"
        await log_in(int(env["PLATEAU_ACD_GRPC_PORT"]), [f"a-{e}" for e in AGENTS])

        # A campaign whose window is closed today: started, it must dial nothing.
        closed = tmp_path / "closed.csv"
        customer_file(closed, 3, first=900)  # numbers of its own
        await create(env, "closed", closed_days())
        await import_and_start(env, "closed", closed, 3)

        clients = tmp_path / "clients.csv"
        customer_file(clients, CONTACTS)
        await create(env, "renewals", ",".join(DAYS))
        campaign_started = time.monotonic()
        await import_and_start(env, "renewals", clients, CONTACTS)

        async def all_ended() -> bool:
            placed = {d["call_id"] for d in await facts(dsn, "sip_gateway", "call.originated")}
            done = {d["call_id"] for d in await facts(dsn, "sip_gateway", "call.ended")}
            return len(placed & done) >= expected

        await wait(
            all_ended,
            f"{expected} dials to end",
            timeout=240,
            explain=lambda: where_it_stands(dsn),
        )
        print(
            f"campaign of {CONTACTS} contacts, {expected} dials: "
            f"{time.monotonic() - campaign_started:.0f} s "
            f"(after {campaign_started - up_started:.0f} s of plateau up, configuration and "
            "registrations)"
        )
        code, output = await network.result(timeout=30)
        assert code == 0, f"the customers' network saw failed calls:\n{output}"

        originated = await facts(dsn, "sip_gateway", "call.originated", "renewals")
        completed = {
            d["call_id"]: d for d in await facts(dsn, "sip_gateway", "call.dial_completed")
        }
        connected = {d["call_id"]: d for d in await facts(dsn, "sip_gateway", "call.connected")}
        abandoned = await facts(dsn, "sip_gateway", "call.compliance_abandoned", "renewals")
        by_number: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for dial in originated:
            by_number[dial["number"]].append(dial)

        # Every contact dialled by the rules: once when answered, up to the limit otherwise.
        assert len(originated) == expected
        for i in range(CONTACTS):
            dials = by_number[e164(i)]
            outcomes = [completed[d["call_id"]]["outcome"] for d in dials]
            if i in BUSY:
                assert outcomes == ["busy"] * MAX_ATTEMPTS, (i, outcomes)
            elif i in NO_ANSWER:
                assert outcomes == ["no_answer"] * MAX_ATTEMPTS, (i, outcomes)
            else:
                assert outcomes == ["answered"], (i, outcomes)
                # ... and the answer went to an agent of the campaign's queue.
                link = connected.get(dials[0]["call_id"])
                assert link is not None, f"contact {i} answered but was connected to no agent"
                assert link["queue_id"] == "q-sales"
        assert abandoned == []

        # The acd's decisions: each answer queued as outbound and reserved once, explained.
        queued = [
            d for d in await facts(dsn, "acd", "call.queued") if d.get("direction") == "outbound"
        ]
        reserved = Counter(d["call_id"] for d in await facts(dsn, "acd", "call.agent_reserved"))
        answers = {
            d["call_id"] for d in originated if completed[d["call_id"]]["outcome"] == "answered"
        }
        assert {d["call_id"] for d in queued} == answers
        assert all(d["campaign_id"] == "renewals" for d in queued)
        assert all(reserved[call_id] == 1 for call_id in answers)

        # Retries no earlier than planned: the gateway's outcome of an attempt, then the
        # dialer's check of the next one at least the retry delay later.
        outcome_at = {
            d["attempt_id"]: at for at, d in await events(dsn, "sip_gateway", "call.dial_completed")
        }
        checks = [
            (at, d)
            for at, d in await events(dsn, "dialer", "dial.compliance_checked")
            if d["campaign_id"] == "renewals"
        ]
        per_contact: dict[str, list[tuple[dt.datetime, dict[str, Any]]]] = defaultdict(list)
        for at, check in checks:
            per_contact[check["contact_id"]].append((at, check))
        retried = 0
        for attempts in per_contact.values():
            for (_, earlier), (later_at, later) in itertools.pairwise(attempts):
                assert later["attempt_number"] == earlier["attempt_number"] + 1
                gap = later_at - outcome_at[earlier["attempt_id"]]
                assert gap >= dt.timedelta(seconds=RETRY_AFTER_S), (earlier, later, gap)
                retried += 1
        assert retried == len(BUSY) + len(NO_ANSWER)

        # The compliance ledger: one allowed check per dial placed, all inside the window.
        assert len(checks) == expected
        assert all(d["decision"] == "allowed" and d["within_calling_window"] for _, d in checks)
        assert Counter(d["attempt_id"] for _, d in checks) == Counter(
            d["attempt_id"] for d in originated
        )

        # The closed campaign: nothing checked, nothing dialled.
        assert await facts(dsn, "dialer", "dial.compliance_checked", "closed") == []
        assert await facts(dsn, "sip_gateway", "call.originated", "closed") == []
    finally:
        for peer in (network, agents):
            if peer is not None:
                peer.kill()
                await peer.process.wait()
        assert up.stop() == 0
