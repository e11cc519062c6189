"""``plateau backup`` and ``plateau restore``: calls recorded in the stores, backup while the
platform runs, wipe the home, restore into it, start again — every report row and every
chain head identical. A damaged, truncated or wrongly keyed archive, and a target that
holds data or is running, are refused with a clear message and nothing is touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from plateau_e2e import PlateauUp, admin_dsn, cli_env, make_home, run_cli, snapshot

from plateau_contracts.events import calls, routing
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent

pytestmark = pytest.mark.e2e

CALLS = 3
#: Bookkeeping of the projector, not report rows.
_NOT_REPORTS = {"consumer_checkpoints", "consumer_store_marks", "consumer_rejects"}
_NOT_REPORTS |= {"relay_positions", "schema_migrations", "events"}


async def _record_calls(dsn: str) -> None:
    """Inbound calls answered and talked, as the gateway and the acd record them."""
    pool = await create_pool(dsn, max_size=2)
    try:
        gateway, acd = EventStore(pool, "sip_gateway"), EventStore(pool, "acd")
        for n in range(CALLS):
            start = datetime.now(UTC) - timedelta(minutes=30 - n)
            call_id, queue = f"backup-call-{n}", "backup-support"
            queued = routing.CallQueued(
                queue_id=queue, call_id=call_id, direction="inbound", priority=0
            )
            await acd.append(
                queued.stream_id("demo"), [NewEvent(queued, tenant="demo", occurred_at=start)]
            )
            connected = calls.CallConnected(
                call_id=call_id, agent_id="a-backup", extension="1001", queue_id=queue
            )
            ended = calls.CallEnded(
                call_id=call_id, cause=calls.EndCause.CALLER_HANGUP, ended_by=calls.EndedBy.CALLER
            )
            await gateway.append(
                connected.stream_id(),
                [
                    NewEvent(connected, tenant="demo", occurred_at=start + timedelta(seconds=9)),
                    NewEvent(ended, tenant="demo", occurred_at=start + timedelta(seconds=80 + n)),
                ],
            )
    finally:
        await pool.close()


async def _wait_for_calls(dsn: str, timeout: float = 180) -> None:
    """Poll until the projector applied every fact of every call (a guard, not a timing)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            facts = await conn.fetchval(
                "select count(*) from stats_projector.call_facts "
                "where tenant = 'demo' and call_id like 'backup-call-%'"
            )
        finally:
            await conn.close()
        if facts >= 3 * CALLS:
            return
        assert time.monotonic() < deadline, f"only {facts} facts of {3 * CALLS} were projected"
        await asyncio.sleep(0.5)


CUSTOMERS = "Référence;Abonné;Téléphone\r\nA-1;Élodie;06 612 34 56\r\nA-2;Noël;05 512 34 56\r\n"


async def _progress(dsn: str) -> tuple[object, ...]:
    """Each store's head and how far the projector applied it."""
    conn = await asyncpg.connect(dsn)
    try:
        heads = []
        for schema in ("sip_gateway", "acd", "dialer", "access_gateway"):
            heads.append(await conn.fetchval(f"select max(position) from {schema}.events"))
        marks = await conn.fetch(
            "select store, max(position) as position from stats_projector.consumer_store_marks "
            "group by store order by store"
        )
        # The gateway's copy of the dialer's allow-list arrives over the bus too.
        allowed = await conn.fetchval("select count(*) from sip_gateway.allowlist_facts")
        return (*heads, allowed, *(tuple(r.values()) for r in marks))
    finally:
        await conn.close()


async def _wait_until_settled(dsn: str, timeout: float = 180) -> None:
    """Poll until nothing moves: the services have reacted to the calls (the acd records
    what it concludes from them) and the projector applied everything. A guard, not a
    timing: the reports compared after the restore must be those of the stores backed up."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[object, ...]] = []
    while len(seen) < 4 or len(set(seen[-4:])) != 1:
        assert time.monotonic() < deadline, f"the platform never settled: {seen[-4:]}"
        seen.append(await _progress(dsn))
        await asyncio.sleep(1)


async def _wait_for_republished(dsn: str, timeout: float = 180) -> None:
    """Poll until every relay of the restored installation has republished its whole store
    to the new, empty bus (a guard, not a timing): what the consumers then received twice
    must have changed nothing."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            behind = []
            for schema in ("sip_gateway", "acd", "dialer", "access_gateway"):
                head = await conn.fetchval(
                    f"select coalesce(max(position), 0) from {schema}.events"
                )
                relayed = await conn.fetchval(
                    f"select coalesce(max(position), 0) from {schema}.relay_positions"
                )
                if relayed < head:
                    behind.append(f"{schema} {relayed}/{head}")
        finally:
            await conn.close()
        if not behind:
            return
        assert time.monotonic() < deadline, f"relays still behind: {behind}"
        await asyncio.sleep(0.5)


async def _rows(dsn: str, schemas: dict[str, set[str] | None]) -> dict[str, list[str]]:
    """Every row of the tables of ``schemas`` (None: all but bookkeeping), as sorted text."""
    conn = await asyncpg.connect(dsn)
    try:
        result: dict[str, list[str]] = {}
        for schema, only in schemas.items():
            names = [
                r["tablename"]
                for r in await conn.fetch(
                    "select tablename from pg_tables where schemaname = $1 order by 1", schema
                )
            ]
            for name in names:
                if (only is None and name in _NOT_REPORTS) or (
                    only is not None and name not in only
                ):
                    continue
                rows = await conn.fetch(f"select * from {schema}.{name}")
                result[f"{schema}.{name}"] = sorted(repr(tuple(r.values())) for r in rows)
        return result
    finally:
        await conn.close()


def _reports(dsn: str) -> dict[str, list[str]]:
    return asyncio.run(_rows(dsn, {"stats_projector": None}))


def _archived_state(dsn: str) -> dict[str, list[str]]:
    return asyncio.run(
        _rows(
            dsn,
            {
                "sip_gateway": {"events", "allowlist_facts"},
                "acd": {"events"},
                "dialer": {"events", "contacts", "campaign_status"},
                "access_gateway": {"events", "users"},
            },
        )
    )


def _heads(verify_output: str) -> list[str]:
    return sorted(line for line in verify_output.splitlines() if "intact" in line)


@dataclass
class BackedUp:
    env: dict[str, str]
    home: Path
    archive: Path
    key: Path
    reports: dict[str, list[str]]
    state: dict[str, list[str]]
    heads: list[str]
    home_files: dict[str, tuple[int, str]]


def _config_files(home: Path) -> dict[str, tuple[int, str]]:
    return {
        name: value
        for name, value in snapshot(home).items()
        if name.split("/")[0] not in {"pg", "logs", "state.json", "up.lock", "secrets.json"}
        and value[1] != "dir"
    }


@pytest.fixture(scope="module")
def backed_up() -> Iterator[BackedUp]:
    """A platform with calls projected, backed up while running, then stopped."""
    home = make_home()
    work = home.parent / "work"
    work.mkdir()
    key = work / "backup.key"
    key.write_bytes(os.urandom(32))
    env = cli_env(home)
    up = PlateauUp(env)
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        dsn = admin_dsn(home)
        asyncio.run(_record_calls(dsn))
        created = run_cli(
            *("campaign", "create", "renewals", "--queue", "sales", "--window", "08:00-20:00"),
            env=env,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        customers = work / "customers.csv"
        customers.write_bytes(CUSTOMERS.encode("cp1252"))
        imported = run_cli("campaign", "import", str(customers), "--campaign", "renewals", env=env)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        asyncio.run(_wait_for_calls(dsn))
        asyncio.run(_wait_until_settled(dsn))
        settled = asyncio.run(_progress(dsn))
        reports = _reports(dsn)
        state = _archived_state(dsn)
        verified = run_cli("verify", env=env, timeout=120)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        backups = work / "backups"
        backups.mkdir()
        for _ in range(3):
            done = run_cli(
                "backup",
                "--output",
                str(backups),
                "--key-file",
                str(key),
                "--keep",
                "2",
                env=env,
                timeout=180,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "backup written to" in done.stdout
        # Nothing moved while the reports were read and the archives written.
        assert asyncio.run(_progress(dsn)) == settled
        archives = sorted(backups.iterdir())
        assert len(archives) == 2, archives  # --keep 2 removed the oldest
        assert "removed older backup" in done.stdout
        assert len(state["dialer.contacts"]) == 2, state["dialer.contacts"]
        assert state["sip_gateway.allowlist_facts"], "the gateway never learnt the list"
        home_files = _config_files(home)
        assert "access-users.json" in home_files
    finally:
        assert up.stop() == 0
    yield BackedUp(
        env, home, archives[-1], key, reports, state, _heads(verified.stdout), home_files
    )
    shutil.rmtree(home.parent, ignore_errors=True)


def test_a_backup_restores_into_a_wiped_home_with_identical_reports(backed_up: BackedUp) -> None:
    home, env = backed_up.home, backed_up.env
    assert any(rows for name, rows in backed_up.reports.items() if "call" in name)
    shutil.rmtree(home)

    restored = run_cli(
        "restore", str(backed_up.archive), "--key-file", str(backed_up.key), env=env, timeout=300
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "chain intact" in restored.stdout
    assert _config_files(home) == backed_up.home_files

    up = PlateauUp(env)
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        dsn = admin_dsn(home)
        asyncio.run(_wait_for_republished(dsn))
        asyncio.run(_wait_until_settled(dsn))
        assert _reports(dsn) == backed_up.reports
        assert _archived_state(dsn) == backed_up.state
        verified = run_cli("verify", env=env, timeout=120)
        assert _heads(verified.stdout) == backed_up.heads

        # A running installation is refused at once.
        again = run_cli(
            "restore", str(backed_up.archive), "--key-file", str(backed_up.key), env=env
        )
        assert again.returncode == 2
        assert "is running" in again.stderr

        # A database holding data is refused, and is left exactly as it was.
        before = {**_reports(dsn), **_archived_state(dsn)}
        files_before = _config_files(home)
        into = run_cli(
            "restore",
            str(backed_up.archive),
            "--key-file",
            str(backed_up.key),
            "--admin-url",
            dsn,
            env=env,
            timeout=120,
        )
        assert into.returncode == 2
        assert "the target installation is not empty" in into.stderr
        assert "nothing was changed" in into.stderr
        assert {**_reports(dsn), **_archived_state(dsn)} == before
        assert _config_files(home) == files_before
    finally:
        assert up.stop() == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", "damaged or was altered"),
        ("truncate", "truncated"),
        ("wrong-key", "wrong key"),
        ("version", "format version 9"),
        ("passphrase", "encrypted with a key file"),
    ],
)
def test_a_bad_archive_is_refused_before_anything_is_written(
    backed_up: BackedUp, damage: str, message: str
) -> None:
    work = backed_up.archive.parent.parent
    data = bytearray(backed_up.archive.read_bytes())
    key = backed_up.key
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        del data[len(data) - 100 :]
    elif damage == "wrong-key":
        key = work / "other.key"
        key.write_bytes(os.urandom(32))
    elif damage == "version":
        data[15:17] = (9).to_bytes(2, "big")
    bad = work / f"bad-{damage}.plateau-backup"
    bad.write_bytes(bytes(data))
    target = work / f"target-{damage}"
    env = cli_env(target)
    key_option = ["--key-file", str(key)]
    if damage == "passphrase":
        env["PLATEAU_BACKUP_KEY"] = "a passphrase instead of the key file"
        key_option = []
    refused = run_cli("restore", str(bad), *key_option, env=env, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert message in refused.stderr
    assert not target.exists()  # not even the home was created
