"""The read endpoints against the stats projector's real read models: supervision, reports,
call detail pages, signed exports (checked by ``plateau verify-export`` in a subprocess), the
database's tenant isolation, and a full IDOR matrix that answers 404 and is audited."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from access_read_harness import (
    World,
    build_world,
    envelopes,
    handled_call,
    tag,
    tenant_traffic,
    today_start,
)
from openpyxl import load_workbook

from plateau_access_gateway.domain.principal import Role
from plateau_contracts.events import routing
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.db import connect
from plateau_runtime.embedded import free_port
from plateau_runtime.services import SERVICES
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
async def world(
    admin_dsn: str, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[World]:
    async for built in build_world(admin_dsn, service_schema, tmp_path, heartbeat_s=1.0):
        yield built


@pytest.fixture
async def two_tenants(world: World) -> tuple[str, str, str, str]:
    """Tenants A and B with the same traffic; their tags. Logged in: A's analyst "a", B's
    analyst "b", and "a-q1", A's supervisor scoped to queue q1 and to a campaign A does not
    run (an account with no campaign listed sees them all)."""
    tag_a, tag_b = tag(), tag()
    tenant_a, tenant_b = f"alpha{tag_a}", f"beta{tag_b}"
    await world.project(tenant_traffic(tenant_a, tag_a))
    await world.project(tenant_traffic(tenant_b, tag_b))
    await world.sign_in("a", tenant_a)
    await world.sign_in("b", tenant_b)
    await world.sign_in(
        "a-q1",
        tenant_a,
        role=Role.CLIENT_SUPERVISOR,
        queues=[f"q1{tag_a}"],
        campaigns=[f"cmp-none{tag_a}"],
    )
    return tenant_a, tag_a, tenant_b, tag_b


def client(world: World, who: str | None) -> httpx.AsyncClient:
    return world.client(who)


def period() -> dict[str, str]:
    start = today_start() - timedelta(days=1)
    return {"from": start.isoformat(), "to": (start + timedelta(days=3)).isoformat()}


async def test_supervision_shows_the_tenants_queues_agents_and_campaigns(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    _, ta, _, tb = two_tenants
    async with client(world, "a") as http:
        queues = (await http.get("/api/v1/queues")).json()
        assert [q["queue_id"] for q in queues] == [f"q1{ta}", f"q2{ta}"]
        q1 = (await http.get(f"/api/v1/queues/q1{ta}")).json()
        assert q1["calls_waiting"] == 1 and q1["longest_waiting_since"] is not None
        assert (q1["today"]["offered"], q1["today"]["answered"]) == (3, 2)
        assert q1["today"]["service_level"] == 1 and q1["today"]["asa_ms"] == 5000
        assert {(s["state"], s["agents"]) for s in q1["agents_by_state"]} == {("available", 2)}
        agents = (await http.get("/api/v1/agents")).json()
        assert [a["agent_id"] for a in agents] == [f"a1{ta}", f"a2{ta}"]
        a1 = (await http.get(f"/api/v1/agents/a1{ta}")).json()
        assert a1["state"] == "available" and a1["today"]["handled"] == 2
        campaigns = (await http.get("/api/v1/campaigns")).json()
        assert [c["campaign_id"] for c in campaigns] == [f"cmp{ta}"]
        one = (await http.get(f"/api/v1/campaigns/cmp{ta}")).json()
        assert one["contacts_in_list"] == 10
        assert "compliance_abandonment_rate" in one["last_30_days"]
    async with client(world, "b") as http:
        queues = (await http.get("/api/v1/queues")).json()
        assert [q["queue_id"] for q in queues] == [f"q1{tb}", f"q2{tb}"]
    async with client(world, None) as http:
        assert (await http.get("/api/v1/queues")).status_code == 401


async def test_the_database_scopes_every_row_to_the_principals_tenant(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    tenant_a, _, tenant_b, _ = two_tenants
    for relation in ("call_records", "interval_measures", "agent_status", "queue_settings"):
        everything = await world.stats_pool.fetch(f"select distinct tenant from {relation}")
        assert {r["tenant"] for r in everything} >= {tenant_a, tenant_b}
        # The same query, with no WHERE clause, through the gateway's scoped transaction.
        async with world.read_models.scoped(tenant_a) as conn:
            rows = await conn.fetch(f"select distinct tenant from {relation}")
            assert {r["tenant"] for r in rows} == {tenant_a}, relation
            assert await conn.fetchval("select current_user") == world.read_models._reader_role
    # Nothing of the scoped transaction stays on the pooled connections afterwards.
    for _ in range(world.access_pool.get_size()):
        async with world.access_pool.acquire() as conn:
            assert await conn.fetchval("select current_user") == world.access.service.role
            assert not await conn.fetchval("select current_setting('plateau.tenant', true)")


async def test_another_tenants_or_scopes_objects_answer_404_and_are_audited(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    _, ta, tenant_b, tb = two_tenants
    when = period()
    matrix = [
        ("a", f"/api/v1/queues/q1{tb}", {}, "queue", f"q1{tb}"),
        ("a", f"/api/v1/agents/a1{tb}", {}, "agent", f"a1{tb}"),
        ("a", f"/api/v1/campaigns/cmp{tb}", {}, "campaign", f"cmp{tb}"),
        ("a", "/api/v1/reports/queues", {**when, "ids": f"q1{tb}"}, "queue", f"q1{tb}"),
        ("a", "/api/v1/reports/agents", {**when, "ids": f"a1{tb}"}, "agent", f"a1{tb}"),
        ("a", "/api/v1/reports/campaigns", {**when, "ids": f"cmp{tb}"}, "campaign", f"cmp{tb}"),
        ("a", "/api/v1/calls", {"queue": f"q1{tb}"}, "queue", f"q1{tb}"),
        ("a", "/api/v1/calls", {"agent": f"a1{tb}"}, "agent", f"a1{tb}"),
        ("a", "/api/v1/exports/report.csv", {**when, "kind": "queues", "ids": f"q1{tb}"},
         "queue", f"q1{tb}"),
        ("a", "/api/v1/exports/report.xlsx", {**when, "kind": "campaigns", "ids": f"cmp{tb}"},
         "campaign", f"cmp{tb}"),
        ("a", "/api/v1/exports/calls.csv", {"queue": f"q1{tb}"}, "queue", f"q1{tb}"),
        ("a", "/api/v1/exports/calls.xlsx", {"agent": f"a1{tb}"}, "agent", f"a1{tb}"),
        # Inside the tenant, outside the user's scope.
        ("a-q1", f"/api/v1/queues/q2{ta}", {}, "queue", f"q2{ta}"),
        ("a-q1", f"/api/v1/campaigns/cmp{ta}", {}, "campaign", f"cmp{ta}"),
        ("a-q1", "/api/v1/reports/queues", {**when, "ids": f"q2{ta}"}, "queue", f"q2{ta}"),
        ("a-q1", "/api/v1/calls", {"queue": f"q2{ta}"}, "queue", f"q2{ta}"),
        ("a-q1", "/api/v1/exports/calls.csv", {"queue": f"q2{ta}"}, "queue", f"q2{ta}"),
    ]  # fmt: skip
    for who, path, params, _, _ in matrix:
        async with client(world, who) as http:
            answer = await http.get(path, params=params)
        assert answer.status_code == 404, (who, path, params, answer.text)
    denied = await world.audit_facts("access.denied")
    assert [(d["resource_kind"], d["resource_id"]) for d in denied] == [
        (kind, ident) for _, _, _, kind, ident in matrix
    ]
    who_asked = [world.users[who].user_id for who, *_ in matrix]
    assert [d["user_id"] for d in denied] == who_asked
    assert tenant_b not in {d["tenant"] for d in denied}
    # What the scoped user may see, it sees; the rest of the tenant is hidden from lists.
    async with client(world, "a-q1") as http:
        queues = (await http.get("/api/v1/queues")).json()
        calls = (await http.get("/api/v1/calls")).json()["calls"]
        campaigns = (await http.get("/api/v1/campaigns")).json()
        queue_report = await http.get("/api/v1/reports/queues", params=when)
        campaign_report = await http.get("/api/v1/reports/campaigns", params=when)
    assert {r["id"] for r in queue_report.json()["rows"]} == {f"q1{ta}"}
    assert campaign_report.json()["rows"] == []  # a scope of no campaign sees none
    assert [q["queue_id"] for q in queues] == [f"q1{ta}"]
    assert {c["call_id"] for c in calls} == {f"c1{ta}", f"c3{ta}", f"c4{ta}"}
    assert campaigns == []


async def test_an_operator_admin_of_one_tenant_gets_404_for_another_tenants_objects(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    tenant_a, ta, _, tb = two_tenants
    await world.sign_in("admin-a", tenant_a, role=Role.OPERATOR_ADMIN)
    async with client(world, "admin-a") as http:
        theirs = await http.get(f"/api/v1/queues/q1{tb}")
        report = await http.get("/api/v1/reports/queues", params={**period(), "ids": f"q1{tb}"})
        mine = await http.get(f"/api/v1/queues/q1{ta}")
    assert theirs.status_code == report.status_code == 404, (theirs.text, report.text)
    assert mine.status_code == 200
    denied = await world.audit_facts("access.denied")
    assert [(d["tenant"], d["user_id"], d["resource_id"]) for d in denied] == [
        (tenant_a, world.users["admin-a"].user_id, f"q1{tb}")
    ] * 2


async def test_an_api_token_reads_reports_and_may_change_nothing(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    _, ta, _, _ = two_tenants
    await world.issue_token("bi", of="a")
    async with client(world, "bi") as http:
        report = await http.get("/api/v1/reports/queues", params=period())
        export = await http.get("/api/v1/exports/report.csv", params={**period(), "kind": "queues"})
        refused = [
            await http.request(method, path)
            for method in ("POST", "PUT", "PATCH", "DELETE")
            for path in ("/api/v1/reports/queues", "/api/v1/tokens", "/api/v1/auth/logout")
        ]
    assert report.status_code == 200, report.text
    assert {r["id"] for r in report.json()["rows"]} == {f"q1{ta}", f"q2{ta}"}
    assert export.status_code == 200
    assert {r.status_code for r in refused} == {403}
    assert {r.json()["type"] for r in refused} == {"urn:plateau:problem:read-only-token"}


async def test_an_interval_report_gives_measures_metrics_and_provenance(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    tenant_a, ta, _, _ = two_tenants
    async with client(world, "a") as http:
        answer = await http.get("/api/v1/reports/queues", params={**period(), "granularity": "day"})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        bad = await http.get(
            "/api/v1/reports/queues", params={**period(), "granularity": "fortnight"}
        )
        assert bad.status_code == 422
    assert report["dimension"] == "queue" and report["granularity"] == "day"
    assert {r["id"] for r in report["rows"]} == {f"q1{ta}", f"q2{ta}"}
    q1 = next(r for r in report["rows"] if r["id"] == f"q1{ta}")
    assert q1["measures"]["offered"] == 3 and q1["measures"]["answered"] == 2
    assert q1["metrics"]["service_level"] == 1 and q1["metrics"]["asa_ms"] == 5000
    assert q1["metrics"]["service_level_threshold_s"] == 20
    assert report["formula_versions"]["service_level"] == 1
    # Up to the last event the projector applied from each store, with its chain hash.
    assert [(p["source"], p["position"], p["chain_head"]) for p in report["computed_up_to"]] == [
        (m.store, m.position, m.chain_hash) for _, m in sorted(world.marks.items())
    ]
    viewed = await world.audit_facts("report.viewed")
    assert [(v["tenant"], v["report"]) for v in viewed] == [(tenant_a, "queue_intervals")]


async def test_call_pages_follow_a_cursor_unmoved_by_inserts(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    tenant_a, ta, _, _ = two_tenants
    seen: list[str] = []
    async with client(world, "a") as http:
        first = (await http.get("/api/v1/calls", params={"limit": 2})).json()
        seen += [c["call_id"] for c in first["calls"]]
        # Calls recorded between pages, before and after the cursor: the next pages neither
        # repeat nor skip a row that was there.
        start = today_start()
        late = handled_call(f"q1{ta}", f"a1{ta}", f"c9{ta}", start + timedelta(seconds=500))
        early = handled_call(f"q2{ta}", f"a2{ta}", f"c0{ta}", start - timedelta(seconds=30))
        await world.project(envelopes(tenant_a, early + late))
        cursor = first["next_cursor"]
        while cursor is not None:
            page = (await http.get("/api/v1/calls", params={"limit": 2, "cursor": cursor})).json()
            seen += [c["call_id"] for c in page["calls"]]
            cursor = page["next_cursor"]
        assert (await http.get("/api/v1/calls", params={"limit": 0})).status_code == 422
        assert (await http.get("/api/v1/calls", params={"limit": 501})).status_code == 422
        assert (await http.get("/api/v1/calls", params={"cursor": "nonsense"})).status_code == 422
    original = [f"c1{ta}", f"c2{ta}", f"c3{ta}", f"c4{ta}", f"o1{ta}"]
    assert [c for c in seen if c in original] == original
    assert len(seen) == len(set(seen))
    assert f"c9{ta}" in seen and f"c0{ta}" not in seen


def verify(path: Path, *extra: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if home is not None:
        env["PLATEAU_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "plateau_cli", "verify-export", str(path), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


async def test_signed_exports_verify_and_any_change_is_detected(
    world: World, two_tenants: tuple[str, str, str, str], tmp_path: Path
) -> None:
    tenant_a, ta, _, _ = two_tenants
    async with client(world, "a") as http:
        key = (await http.get("/api/v1/signing-key")).json()
        calls_csv = await http.get("/api/v1/exports/calls.csv", params={"sep": ";"})
        report_csv = await http.get(
            "/api/v1/exports/report.csv", params={**period(), "kind": "queues"}
        )
        report_xlsx = await http.get(
            "/api/v1/exports/report.xlsx",
            params={**period(), "kind": "agents", "granularity": "15min"},
        )
    assert calls_csv.status_code == report_csv.status_code == report_xlsx.status_code == 200
    assert calls_csv.content.startswith(b"\xef\xbb\xbfcall_id;direction;")
    public_key = key["public_key"]
    files = {
        "calls.csv": calls_csv.content,
        "report.csv": report_csv.content,
        "report.xlsx": report_xlsx.content,
    }
    said = {}
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        checked = verify(path, "--public-key", public_key)
        assert checked.returncode == 0, (name, checked.stdout, checked.stderr)
        assert "verified" in checked.stdout
        assert f"computed up to acd position {world.marks['acd'].position}" in checked.stdout
        said[name] = checked.stdout
    assert "csv, 5 rows" in said["calls.csv"]  # c1-c4 and the outbound o1
    # Without a key given: the embedded default's, from PLATEAU_HOME.
    assert verify(tmp_path / "report.xlsx", home=world.home).returncode == 0

    # One changed byte in a CSV: a figure.
    tampered = tmp_path / "tampered.csv"
    tampered.write_bytes(files["calls.csv"].replace(f"c1{ta};".encode(), f"c7{ta};".encode()))
    failed = verify(tampered, "--public-key", public_key)
    assert failed.returncode == 1 and "changed after it was signed" in failed.stderr
    # A cell of the workbook.
    book = load_workbook(tmp_path / "report.xlsx")
    book["data"]["E2"] = 0.01
    book.save(tmp_path / "tampered.xlsx")
    failed = verify(tmp_path / "tampered.xlsx", "--public-key", public_key)
    assert failed.returncode == 1 and "changed after it was signed" in failed.stderr
    # Another key.
    other = "A" * 43 + "="
    failed = verify(tmp_path / "report.csv", "--public-key", other)
    assert failed.returncode == 1 and "not with the given key" in failed.stderr

    downloaded = await world.audit_facts("export.downloaded")
    assert [(d["tenant"], d["export"], d["format"]) for d in downloaded] == [
        (tenant_a, "call_detail_records", "csv"),
        (tenant_a, "queue_intervals", "csv"),
        (tenant_a, "agent_intervals", "xlsx"),
    ]
    assert [d["sha256"] for d in downloaded] == [
        hashlib.sha256(files[n]).hexdigest() for n in ("calls.csv", "report.csv", "report.xlsx")
    ]


@contextlib.asynccontextmanager
async def served(world: World) -> AsyncIterator[str]:
    """The test app on a real HTTP server on a free loopback port; its base URL."""
    config = uvicorn.Config(world.app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started:
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await serving


async def test_verify_export_fetches_the_public_key_from_the_gateway(
    world: World, two_tenants: tuple[str, str, str, str], tmp_path: Path
) -> None:
    async with client(world, "a") as http:
        export = await http.get("/api/v1/exports/calls.xlsx")
    assert export.status_code == 200
    (tmp_path / "calls.xlsx").write_bytes(export.content)
    async with served(world) as base:
        # Not subprocess.run: the server answers on this test's event loop.
        checker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "plateau_cli",
            "verify-export",
            str(tmp_path / "calls.xlsx"),
            "--url",
            f"{base}/api/v1/signing-key",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        out, err = await asyncio.wait_for(checker.communicate(), 60)
    assert checker.returncode == 0, err.decode()
    assert "xlsx, 5 rows" in out.decode()


async def test_the_stream_pushes_a_change_after_the_projector_writes_it(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    tenant_a, ta, tenant_b, tb = two_tenants
    async with served(world) as base:
        url = f"{base}/api/v1/stream"
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream("GET", url, headers=world.users["a"].headers) as answer,
            http.stream("GET", url, headers=world.users["a-q1"].headers) as scoped_answer,
        ):
            assert answer.headers["content-type"].startswith("text/event-stream")
            events = sse_events(answer.aiter_lines())
            scoped_events = sse_events(scoped_answer.aiter_lines())
            snapshot = [await anext(events) for _ in range(5)]  # 2 queues, 2 agents, 1 campaign
            assert {(e["event"], e["key"]) for e in snapshot} == {
                ("queue", f"q1{ta}"),
                ("queue", f"q2{ta}"),
                ("agent", f"a1{ta}"),
                ("agent", f"a2{ta}"),
                ("campaign", f"cmp{ta}"),
            }
            scoped_snapshot = [await anext(scoped_events) for _ in range(3)]
            assert {(e["event"], e["key"]) for e in scoped_snapshot} == {
                ("queue", f"q1{ta}"),
                ("agent", f"a1{ta}"),
                ("agent", f"a2{ta}"),
            }
            assert world.feed.subscribers == 2
            # The other tenant's change reaches no stream of this tenant, and a queue out
            # of a user's scope reaches no stream of that user.
            later = today_start() + timedelta(seconds=300)
            await world.project(
                envelopes(tenant_b, [(later, queued(f"q1{tb}", f"c5{tb}"))]), notify=True
            )
            await world.project(
                envelopes(tenant_a, [(later, queued(f"q2{ta}", f"c5{ta}"))]), notify=True
            )
            await world.project(
                envelopes(tenant_a, [(later, queued(f"q1{ta}", f"c6{ta}"))]), notify=True
            )
            changes = {}
            while len(changes) < 2:  # one read may carry both changes, in queue order
                change = await asyncio.wait_for(anext(events), 10)
                changes[change["key"]] = change
            assert set(changes) == {f"q1{ta}", f"q2{ta}"}
            assert changes[f"q2{ta}"]["data"]["calls_waiting"] == 1
            assert changes[f"q1{ta}"]["data"]["calls_waiting"] == 2
            last = int(snapshot[-1]["id"].split("-")[1])
            assert all(int(c["id"].split("-")[1]) > last for c in changes.values())
            scoped_change = await asyncio.wait_for(anext(scoped_events), 10)
            assert (scoped_change["event"], scoped_change["key"]) == ("queue", f"q1{ta}")
            assert scoped_change["data"]["calls_waiting"] == 2


async def test_a_stream_resumed_with_last_event_id_replays_only_what_changed(
    world: World, two_tenants: tuple[str, str, str, str]
) -> None:
    tenant_a, ta, tenant_b, tb = two_tenants
    async with served(world) as base, httpx.AsyncClient(timeout=30) as http:
        url = f"{base}/api/v1/stream"
        async with http.stream("GET", url, headers=world.users["a"].headers) as answer:
            snapshot = [e async for e in first_events(answer.aiter_lines(), 5)]
        last_id = snapshot[-1]["id"]
        # Only the snapshot's last event says it is complete: cut off before, a client would
        # get a new snapshot.
        assert [e["id"].endswith("-s") for e in snapshot] == [True] * 4 + [False]
        # While the client is away: a call queues in A's q2, and one in B's q1.
        generation = world.feed.generation
        await world.project(
            envelopes(tenant_a, [(today_start(), queued(f"q2{ta}", f"c7{ta}"))]), notify=True
        )
        await world.project(
            envelopes(tenant_b, [(today_start(), queued(f"q1{tb}", f"c7{tb}"))]), notify=True
        )
        for _ in range(200):
            if world.feed.generation >= generation + 2:
                break
            await asyncio.sleep(0.05)
        resumed_headers = {**world.users["a"].headers, "last-event-id": last_id}
        async with http.stream("GET", url, headers=resumed_headers) as answer:
            lines = answer.aiter_lines()
            assert [await anext(lines) for _ in range(4)] == ["retry: 2000", "", ": resumed", ""]
            replayed = await asyncio.wait_for(anext(sse_events(lines)), 10)
        # An id this process did not give (another replica, a restart): a new snapshot.
        stale_headers = {**world.users["a"].headers, "last-event-id": "1-1-1"}
        async with http.stream("GET", url, headers=stale_headers) as answer:
            lines = answer.aiter_lines()
            assert [await anext(lines) for _ in range(4)] == ["retry: 2000", "", ": snapshot", ""]
            again = [e async for e in first_events(lines, 5)]
    assert (replayed["event"], replayed["key"]) == ("queue", f"q2{ta}")
    assert replayed["data"]["calls_waiting"] == 1
    assert int(replayed["id"].split("-")[1]) > int(last_id.split("-")[1])
    assert {e["key"] for e in again} == {e["key"] for e in snapshot}


async def first_events(lines: AsyncIterator[str], count: int) -> AsyncIterator[dict[str, Any]]:
    """The first ``count`` events of a stream."""
    events = sse_events(lines)
    for _ in range(count):
        yield await asyncio.wait_for(anext(events), 10)


def queued(queue: str, call: str) -> StreamedEvent:
    return routing.CallQueued(queue_id=queue, call_id=call, direction="inbound", priority=0)


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The stream's events (comments and retry lines skipped), with their row's id."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "data" in fields:
                data = json.loads(fields["data"])
                key = data.get("queue_id") or data.get("agent_id") or data.get("campaign_id")
                yield {
                    "id": fields.get("id", ""),
                    "event": fields["event"],
                    "data": data,
                    "key": key,
                }
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


async def test_the_gateways_role_is_granted_the_projectors_reader_role(
    admin_dsn: str, service_schema: MigratedSchema
) -> None:
    # Migration 0050 grants it by its real name (the projector's schema is stats_projector);
    # `plateau migrate` applies the projector's migrations first, in SERVICES order.
    admin = await connect(admin_dsn)
    try:
        granted = await admin.fetchval(
            "select pg_has_role($1, 'plateau_stats_projector_reader', 'member')",
            service_schema.service.role,
        )
    finally:
        await admin.close()
    assert granted is True
    names = [spec.name for spec in SERVICES]
    assert names.index("stats-projector") < names.index("access-gateway")


async def test_the_feed_listens_again_after_losing_its_connection(
    world: World, admin_dsn: str
) -> None:
    tenant, t = f"gamma{tag()}", tag()
    lost = world.feed._conn
    assert lost is not None
    with world.feed.subscribe(tenant) as subscription:
        admin = await connect(admin_dsn)
        try:
            await admin.execute("select pg_terminate_backend($1)", lost.get_server_pid())
        finally:
            await admin.close()
        await asyncio.wait_for(subscription.wake.wait(), 20)
        # Back: the streams are told to re-read everything, they may have missed changes.
        assert world.feed._conn is not lost and subscription.take()[3] is True
        await world.project(
            envelopes(tenant, [(today_start(), queued(f"q{t}", f"c{t}"))]), notify=True
        )
        await asyncio.wait_for(subscription.wake.wait(), 10)
        assert subscription.take()[0] == {f"q{t}"}


async def test_the_openapi_document_describes_every_read_endpoint(world: World) -> None:
    paths = world.app.openapi()["paths"]
    for path in (
        "/api/v1/queues",
        "/api/v1/queues/{queue_id}",
        "/api/v1/agents",
        "/api/v1/agents/{agent_id}",
        "/api/v1/campaigns",
        "/api/v1/campaigns/{campaign_id}",
        "/api/v1/stream",
        "/api/v1/reports/{kind}",
        "/api/v1/calls",
        "/api/v1/exports/report.csv",
        "/api/v1/exports/report.xlsx",
        "/api/v1/exports/calls.csv",
        "/api/v1/exports/calls.xlsx",
        "/api/v1/signing-key",
    ):
        assert "get" in paths[path], path
    queue = paths["/api/v1/queues/{queue_id}"]["get"]["responses"]
    assert set(queue) >= {"200", "404"}
    assert "text/event-stream" in paths["/api/v1/stream"]["get"]["responses"]["200"]["content"]
