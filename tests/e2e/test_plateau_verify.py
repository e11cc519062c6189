"""``plateau verify`` as an operator uses it: intact chains are reported with their head, and
an event altered behind the service's back is pinpointed."""

from __future__ import annotations

import asyncio
import re
import shutil

import asyncpg
import pytest
from plateau_e2e import PlateauUp, admin_dsn, cli_env, make_home, run_cli

from plateau_contracts.events.agents import AgentLoggedIn
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent

pytestmark = pytest.mark.e2e


async def _record_logins(dsn: str, count: int) -> None:
    pool = await create_pool(dsn, max_size=2)
    try:
        store = EventStore(pool, "acd")
        for n in range(count):
            login = AgentLoggedIn(agent_id=f"a{n}", extension=f"10{n:02d}")
            await store.append(login.stream_id("demo"), [NewEvent(login, tenant="demo")])
    finally:
        await pool.close()


async def _tamper(dsn: str, position: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("update acd.events set tenant = 'other' where position = $1", position)
    finally:
        await conn.close()


def test_verify_reports_intact_chains_then_pinpoints_a_tampered_event() -> None:
    home = make_home()
    env = cli_env(home)
    up = PlateauUp(env)
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        # The acd's store already holds the demo tenant's configuration.
        before = run_cli("verify", "--service", "acd", env=env)
        found = re.search(r"acd: intact — (\d+) events, head position (\d+)", before.stdout)
        assert found is not None and found[1] == found[2], before.stdout
        base = int(found[1])
        asyncio.run(_record_logins(admin_dsn(home), 5))

        clean = run_cli("verify", env=env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert f"acd: intact — {base + 5} events, head position {base + 5}" in clean.stdout
        assert "sip-gateway: intact — 0 events" in clean.stdout

        asyncio.run(_tamper(admin_dsn(home), base + 3))
        broken = run_cli("verify", "--service", "acd", env=env)
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert f"acd: BROKEN at position {base + 3}" in broken.stdout
        assert f"intact up to head position {base + 2}" in broken.stdout
    finally:
        assert up.stop() == 0
        shutil.rmtree(home.parent, ignore_errors=True)
