"""The compliance ledger endpoint and its signed exports, through the app, against the stats
projector's real read models: every check of the tenant in keyset pages, filters, a
campaign outside the tenant or the scope answers 404 and is audited, views and downloads
are audited, row-level security hides the other tenant's rows, and ``plateau
verify-export`` accepts the files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from access_read_harness import World, build_world

from plateau_access_gateway.adapters.read_models import ReadModels
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import calls, dialer
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.testing import MigratedSchema, as_stored
from plateau_stats_projector.adapters.read_models import Projection

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[4]
WHO = "x-ledger-test-principal"
START = datetime(2026, 5, 4, 8, tzinfo=UTC)


def ledger_facts(tenant: str, campaign: str) -> list[Envelope]:
    """Three dial checks of ``campaign`` (connected, busy, refused by the dialer) and a
    softphone's dial the gateway refused, a minute apart."""
    timed: list[tuple[int, StreamedEvent]] = []
    for n, (decision, outcome) in enumerate(
        (("allowed", calls.DialOutcome.ANSWERED), ("allowed", calls.DialOutcome.BUSY)), 1
    ):
        attempt, call = f"{campaign}-at-{n}", f"{campaign}-call-{n}"
        common = {"contact_id": f"{campaign}-ct-{n}", "campaign_id": campaign}
        timed += [
            (
                60 * n,
                dialer.DialComplianceChecked(
                    **common,
                    attempt_id=attempt,
                    attempt_number=1,
                    max_attempts=3,
                    number=f"+24206600000{n}",
                    decision=decision,
                    list_version=1,
                    on_do_not_call=False,
                    local_time="2026-05-04T09:00:00+01:00",
                    within_calling_window=True,
                ),
            ),
            (
                60 * n + 1,
                dialer.DialAttempted(
                    **common,
                    attempt_id=attempt,
                    attempt_number=1,
                    number=f"+24206600000{n}",
                    list_version=1,
                    call_id=call,
                ),
            ),
            (
                60 * n + 9,
                calls.DialCompleted(
                    call_id=call,
                    outcome=outcome,
                    campaign_id=campaign,
                    attempt_id=attempt,
                    sip_code=486 if outcome is calls.DialOutcome.BUSY else None,
                ),
            ),
        ]
    timed.append(
        (
            70,
            calls.CallConnected(call_id=f"{campaign}-call-1", agent_id="a-1", extension="1001"),
        )
    )
    timed.append(
        (
            180,
            dialer.DialComplianceChecked(
                contact_id=f"{campaign}-ct-3",
                campaign_id=campaign,
                attempt_id=f"{campaign}-at-3",
                attempt_number=3,
                max_attempts=3,
                number="+242066000003",
                decision="refused",
                list_version=1,
                on_do_not_call=True,
                do_not_call_version="dnc-1",
                local_time="2026-05-04T09:03:00+01:00",
                within_calling_window=True,
                refusal="do_not_call",
            ),
        )
    )
    timed.append(
        (
            240,
            calls.DialRefused(
                call_id=f"{campaign}-g1",
                number="+33612345678",
                requested_by=calls.DialRequester.AGENT_SOFTPHONE,
                requester="1001",
                reason=calls.DialRefusalReason.NOT_IN_CONTACT_LIST,
                sip_code=403,
            ),
        )
    )
    ordered = sorted(timed, key=lambda pair: pair[0])
    return as_stored(tenant, [(START + timedelta(seconds=s), e) for s, e in ordered])


@dataclass
class Ledgers:
    """Two tenants' ledgers behind the real app; users logged in through it (password, then
    TOTP): "a" and "b" (analysts of alpha and beta), "a-other-campaign" (alpha, scoped to a
    campaign alpha does not run) and "a-cmp" (alpha, scoped to cmp-a)."""

    world: World

    @property
    def read_models(self) -> ReadModels:
        return self.world.read_models

    @property
    def home(self) -> Path:
        return self.world.home

    async def audit(self, event_type: str) -> list[dict[str, object]]:
        return await self.world.audit_facts(event_type)

    def client(self, who: str) -> httpx.AsyncClient:
        return self.world.client(who)


@pytest.fixture
async def ledgers(
    admin_dsn: str, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[Ledgers]:
    async for world in build_world(admin_dsn, service_schema, tmp_path):
        projection = Projection(notify=False)
        async with world.stats_pool.acquire() as conn:
            for tenant, campaign in (("alpha", "cmp-a"), ("beta", "cmp-b")):
                async with conn.transaction():
                    await projection.apply_batch(conn, ledger_facts(tenant, campaign))
        await world.sign_in("a", "alpha")
        await world.sign_in("b", "beta")
        await world.sign_in("a-other-campaign", "alpha", campaigns=["cmp-x"])
        await world.sign_in("a-cmp", "alpha", campaigns=["cmp-a"])
        yield Ledgers(world)


async def test_the_ledger_pages_through_every_check_of_the_tenant_with_every_field(
    ledgers: Ledgers,
) -> None:
    seen = []
    cursor = None
    async with ledgers.client("a") as http:
        for _ in range(5):
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/v1/compliance", params=params)).json()
            seen += page["records"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert [r["ledger_id"] for r in seen] == [
        "cmp-a-at-1",
        "cmp-a-at-2",
        "cmp-a-at-3",
        "gateway:cmp-a-g1",
    ]
    connected, busy, refused, softphone = seen
    assert connected == {
        "ledger_id": "cmp-a-at-1",
        "source": "dialer",
        "checked_at": "2026-05-04T08:01:00Z",
        "campaign_id": "cmp-a",
        "contact_id": "cmp-a-ct-1",
        "attempt_id": "cmp-a-at-1",
        "number": "+242066000001",
        "attempt_number": 1,
        "max_attempts": 3,
        "list_version": 1,
        "decision": "allowed",
        "refusal": None,
        "on_do_not_call": False,
        "do_not_call_version": None,
        "within_calling_window": True,
        "local_time": "2026-05-04T09:00:00+01:00",
        "requested_by": None,
        "requester": None,
        "call_id": "cmp-a-call-1",
        "dialled_at": "2026-05-04T08:01:01Z",
        "outcome": "connected",
        "sip_code": None,
        "outcome_at": "2026-05-04T08:01:10Z",
    }
    assert (busy["outcome"], busy["sip_code"]) == ("busy", 486)
    assert (refused["decision"], refused["refusal"], refused["on_do_not_call"]) == (
        "refused",
        "do_not_call",
        True,
    )
    assert refused["outcome"] is None and refused["call_id"] is None
    assert (softphone["source"], softphone["requested_by"], softphone["requester"]) == (
        "gateway",
        "agent_softphone",
        "1001",
    )
    assert (softphone["refusal"], softphone["sip_code"], softphone["number"]) == (
        "not_in_contact_list",
        403,
        "+33612345678",
    )
    viewed = await ledgers.audit("report.viewed")
    assert [(v["tenant"], v["report"]) for v in viewed] == [("alpha", "compliance_ledger")] * 2


async def test_filters_by_campaign_decision_and_period(ledgers: Ledgers) -> None:
    async with ledgers.client("a") as http:
        refused = (await http.get("/api/v1/compliance", params={"decision": "refused"})).json()
        campaign = (await http.get("/api/v1/compliance", params={"campaign": "cmp-a"})).json()
        period = (
            await http.get(
                "/api/v1/compliance",
                params={"from": "2026-05-04T08:02:00Z", "to": "2026-05-04T08:04:00Z"},
            )
        ).json()
        backwards = await http.get(
            "/api/v1/compliance",
            params={"from": "2026-05-04T09:00:00Z", "to": "2026-05-04T08:00:00Z"},
        )
        bad_cursor = await http.get("/api/v1/compliance", params={"cursor": "not-mine"})
    assert [r["ledger_id"] for r in refused["records"]] == ["cmp-a-at-3", "gateway:cmp-a-g1"]
    assert [r["ledger_id"] for r in campaign["records"]] == [
        "cmp-a-at-1",
        "cmp-a-at-2",
        "cmp-a-at-3",
    ]
    assert [r["ledger_id"] for r in period["records"]] == ["cmp-a-at-2", "cmp-a-at-3"]
    assert backwards.status_code == bad_cursor.status_code == 422
    viewed = await ledgers.audit("report.viewed")
    assert {"campaign": "cmp-a"} in [v["filters"] for v in viewed]


async def test_another_tenants_or_scopes_campaign_answers_404_and_is_audited(
    ledgers: Ledgers,
) -> None:
    async with ledgers.client("a") as http:
        other_tenant = await http.get("/api/v1/compliance", params={"campaign": "cmp-b"})
        export = await http.get("/api/v1/exports/compliance.csv", params={"campaign": "cmp-b"})
    async with ledgers.client("a-other-campaign") as http:
        out_of_scope = await http.get("/api/v1/compliance", params={"campaign": "cmp-a"})
        everything_in_scope = (await http.get("/api/v1/compliance")).json()
    async with ledgers.client("a-cmp") as http:
        own = (await http.get("/api/v1/compliance")).json()
    assert other_tenant.status_code == export.status_code == out_of_scope.status_code == 404
    # A user scoped to other campaigns sees no row of this one, nor the softphone refusal.
    assert everything_in_scope["records"] == []
    assert [r["ledger_id"] for r in own["records"]] == ["cmp-a-at-1", "cmp-a-at-2", "cmp-a-at-3"]
    denied = await ledgers.audit("access.denied")
    assert [(d["tenant"], d["path"], d["resource_id"], d["reason"]) for d in denied] == [
        ("alpha", "/api/v1/compliance", "cmp-b", "other_tenant"),
        ("alpha", "/api/v1/exports/compliance.csv", "cmp-b", "other_tenant"),
        ("alpha", "/api/v1/compliance", "cmp-a", "out_of_scope"),
    ]


async def test_row_level_security_hides_the_other_tenants_ledger(ledgers: Ledgers) -> None:
    async with ledgers.client("b") as http:
        page = (await http.get("/api/v1/compliance")).json()
    assert {r["campaign_id"] for r in page["records"]} == {"cmp-b", None}
    assert all(r["ledger_id"].startswith(("cmp-b", "gateway:cmp-b")) for r in page["records"])
    # The database itself, not only the query: tenant B's session sees no row of A's,
    # even when it asks for them by name.
    async with ledgers.read_models.scoped("beta") as conn:
        assert await conn.fetchval("select count(*) from compliance_ledger") == 4
        assert (
            await conn.fetchval("select count(*) from compliance_ledger where tenant = 'alpha'")
            == 0
        )


def verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plateau_cli", "verify-export", str(path), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=REPO,
        check=False,
    )


async def test_signed_exports_of_the_ledger_verify(ledgers: Ledgers, tmp_path: Path) -> None:
    async with ledgers.client("a") as http:
        key = (await http.get("/api/v1/signing-key")).json()["public_key"]
        csv = await http.get("/api/v1/exports/compliance.csv", params={"sep": ";"})
        xlsx = await http.get(
            "/api/v1/exports/compliance.xlsx", params={"campaign": "cmp-a", "decision": "allowed"}
        )
    assert csv.status_code == xlsx.status_code == 200
    assert csv.content.startswith(b"\xef\xbb\xbfledger_id;source;checked_at;campaign_id;")
    assert b"gateway:cmp-a-g1;gateway;" in csv.content and b"cmp-b" not in csv.content
    (tmp_path / "compliance.csv").write_bytes(csv.content)
    (tmp_path / "compliance.xlsx").write_bytes(xlsx.content)
    checked = verify(tmp_path / "compliance.csv", "--public-key", key)
    assert checked.returncode == 0, checked.stderr
    assert "csv, 4 rows" in checked.stdout and "export compliance_ledger" in checked.stdout
    checked = verify(tmp_path / "compliance.xlsx", "--public-key", key)
    assert checked.returncode == 0, checked.stderr
    assert "xlsx, 2 rows" in checked.stdout
    tampered = tmp_path / "tampered.csv"
    tampered.write_bytes(csv.content.replace(b";refused;do_not_call;", b";allowed;;"))
    failed = verify(tampered, "--public-key", key)
    assert failed.returncode == 1 and "changed after it was signed" in failed.stderr
    downloaded = await ledgers.audit("export.downloaded")
    assert [(d["tenant"], d["export"], d["format"], d["rows"]) for d in downloaded] == [
        ("alpha", "compliance_ledger", "csv", 4),
        ("alpha", "compliance_ledger", "xlsx", 2),
    ]
    assert downloaded[1]["filters"] == {"campaign": "cmp-a", "decision": "allowed"}
