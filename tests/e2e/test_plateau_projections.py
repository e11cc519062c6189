"""``plateau projections rebuild`` on the running platform: calls recorded by the gateway
and the acd reach the stats projector's read models; a rebuild from the event stores swaps
in the same figures, and the running projector goes on projecting afterwards."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from plateau_e2e import PlateauUp, admin_dsn, cli_env, make_home, run_cli

from plateau_contracts.events import calls, routing
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent

pytestmark = pytest.mark.e2e


async def _record_call(dsn: str, n: int) -> None:
    """One inbound call answered after 12 s and talked for a minute, as the gateway and the
    acd would record it in their own stores."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    call_id, queue = f"e2e-call-{n}", "e2e-support"
    pool = await create_pool(dsn, max_size=2)
    try:
        gateway, acd = EventStore(pool, "sip_gateway"), EventStore(pool, "acd")
        queued = routing.CallQueued(
            queue_id=queue, call_id=call_id, direction="inbound", priority=0
        )
        await acd.append(
            queued.stream_id("demo"), [NewEvent(queued, tenant="demo", occurred_at=start)]
        )
        connected = calls.CallConnected(
            call_id=call_id, agent_id="a-e2e", extension="1001", queue_id=queue
        )
        ended = calls.CallEnded(
            call_id=call_id, cause=calls.EndCause.CALLER_HANGUP, ended_by=calls.EndedBy.CALLER
        )
        await gateway.append(
            connected.stream_id(),
            [
                NewEvent(connected, tenant="demo", occurred_at=start + timedelta(seconds=12)),
                NewEvent(ended, tenant="demo", occurred_at=start + timedelta(seconds=72)),
            ],
        )
    finally:
        await pool.close()


async def _read_models(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select dimension, dimension_id, interval_start, measure, value "
            "from stats_projector.interval_measures where tenant = 'demo' order by 1, 2, 3, 4"
        )
        return [tuple(r.values()) for r in rows]
    finally:
        await conn.close()


async def _wait_for_call(dsn: str, n: int, timeout: float = 120) -> None:
    """Poll until the projector has applied all three facts of call ``n`` (queued, connected,
    ended — they come from two stores over two topics, in either order); a guard, not a
    timing check."""
    deadline = time.monotonic() + timeout
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            facts = await conn.fetchval(
                "select count(*) from stats_projector.call_facts "
                "where tenant = 'demo' and call_id = $1",
                f"e2e-call-{n}",
            )
        finally:
            await conn.close()
        if facts >= 3:
            return
        assert time.monotonic() < deadline, f"only {facts} of call {n}'s 3 facts were projected"
        await asyncio.sleep(0.5)


def test_a_rebuild_swaps_in_the_same_figures_and_the_projector_goes_on() -> None:
    home = make_home()
    env = cli_env(home)
    up = PlateauUp(env)
    try:
        assert up.wait_for("Plateau is up"), up.output()[-4000:]
        dsn = admin_dsn(home)
        asyncio.run(_record_call(dsn, 1))
        asyncio.run(_wait_for_call(dsn, 1))
        before = asyncio.run(_read_models(dsn))
        assert ("queue", "e2e-support") in {row[:2] for row in before}

        rebuilt = run_cli("projections", "rebuild", env=env, timeout=120)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "stats-projector: rebuilt from" in rebuilt.stdout
        assert asyncio.run(_read_models(dsn)) == before

        asyncio.run(_record_call(dsn, 2))
        asyncio.run(_wait_for_call(dsn, 2))
    finally:
        assert up.stop() == 0
        shutil.rmtree(home.parent, ignore_errors=True)
