"""The compliance ledger: projection throughput on outbound traffic, and page reads.

Run from the checkout:  .venv/bin/python bench/compliance_ledger.py

It starts its own embedded PostgreSQL in a temporary directory (removed afterwards),
migrates the stats projector's schema as ``plateau migrate`` would, and prints:

1. events/s applied by the projection (``apply_batch_once`` of 500 events at a time, as the
   consumer applies a poll) on synthetic outbound dials: every dial is checked
   (``dial.compliance_checked``), 95 % are dialled (``dial.attempted``,
   ``call.dial_completed``), a third of the answered ones connect to an agent and some are
   compliance abandons; 1 % more are softphone dials the gateway refuses;
2. the time to read one page of 100 ledger rows as the access gateway does (reader role,
   row-level security, ``ReadModels.compliance``): the first page, a page deep into the
   ledger by cursor, and one campaign's refused checks; p50 and p99 of repeated reads
   (each read is a repeatable-read transaction that also reads the provenance).
   ``BENCH_EXPLAIN=1`` prints the plans; ``BENCH_NO_LEDGER=1`` skips the ledger's step of
   the projection and the reads (the ledger's cost is the difference); ``BENCH_DIALS`` sets
   the number of dials; ``BENCH_ANALYZE_EVERY=N`` analyzes the ledger every N batches, as
   autovacuum would on a live system (without it, the planner has no statistics of the
   growing table during the run and its lookups by call id scan the tenant's rows).

Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plateau_access_gateway.adapters.read_models import (
    ComplianceFilter,
    ReadModels,
    compliance_query,
)
from plateau_access_gateway.domain.principal import Principal, Role, Via
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import calls as cl
from plateau_contracts.events import dialer as dl
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.consumer import apply_batch_once
from plateau_runtime.db import connect, create_pool
from plateau_runtime.embedded import EmbeddedPostgres, free_port
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn
from plateau_runtime.services import service
from plateau_runtime.testing import as_stored
from plateau_stats_projector.adapters.read_models import Projection

DIALS = int(os.environ.get("BENCH_DIALS", "20000"))
CAMPAIGNS = 10
BATCH = 500
READS = 40
TENANT = "acme"


def dial_events(n: int, start: datetime) -> list[tuple[datetime, StreamedEvent]]:
    """One dial check and what follows it, as (when, event)."""
    campaign, contact, attempt, call = f"cmp-{n % CAMPAIGNS}", f"ct-{n}", f"at-{n}", f"o-{n}"
    s = timedelta(seconds=1)
    refused = n % 20 == 0
    out: list[tuple[datetime, StreamedEvent]] = [
        (
            start,
            dl.DialComplianceChecked(
                contact_id=contact,
                campaign_id=campaign,
                attempt_id=attempt,
                attempt_number=1,
                max_attempts=3,
                number=f"+24206{n % 10_000_000:07d}",
                decision="refused" if refused else "allowed",
                list_version=1,
                on_do_not_call=refused,
                local_time="2026-05-04T10:00:00+01:00",
                within_calling_window=True,
                refusal="do_not_call" if refused else None,
            ),
        )
    ]
    if refused:
        return out
    outcome = (cl.DialOutcome.ANSWERED, cl.DialOutcome.NO_ANSWER, cl.DialOutcome.BUSY)[n % 3]
    out += [
        (
            start + s,
            dl.DialAttempted(
                contact_id=contact,
                campaign_id=campaign,
                attempt_id=attempt,
                attempt_number=1,
                number=f"+24206{n % 10_000_000:07d}",
                list_version=1,
                call_id=call,
            ),
        ),
        (
            start + 15 * s,
            cl.DialCompleted(
                call_id=call, outcome=outcome, campaign_id=campaign, attempt_id=attempt
            ),
        ),
    ]
    if outcome is cl.DialOutcome.ANSWERED and n % 17 == 0:
        out.append(
            (
                start + 17 * s,
                cl.ComplianceAbandoned(
                    call_id=call,
                    campaign_id=campaign,
                    attempt_id=attempt,
                    waited_ms=2000,
                    message_played=False,
                ),
            )
        )
    elif outcome is cl.DialOutcome.ANSWERED:
        out.append(
            (start + 16 * s, cl.CallConnected(call_id=call, agent_id="a-1", extension="1001"))
        )
    if n % 100 == 1:
        out.append(
            (
                start + 2 * s,
                cl.DialRefused(
                    call_id=f"g-{n}",
                    number="+33612345678",
                    requested_by=cl.DialRequester.AGENT_SOFTPHONE,
                    requester="1001",
                    reason=cl.DialRefusalReason.NOT_IN_CONTACT_LIST,
                    sip_code=403,
                ),
            )
        )
    return out


def envelopes() -> list[Envelope]:
    start = datetime(2026, 5, 4, 8, tzinfo=UTC)
    timed = [
        pair for n in range(DIALS) for pair in dial_events(n, start + timedelta(seconds=n / 5))
    ]
    timed.sort(key=lambda pair: pair[0])
    return as_stored(TENANT, timed)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def timed_reads(label: str, read: object) -> None:
    times = []
    for _ in range(READS):
        began = time.perf_counter()
        rows = await read()  # type: ignore[operator]
        times.append((time.perf_counter() - began) * 1000)
    print(
        f"  {label}: {rows} rows, p50 {statistics.median(times):.1f} ms, "
        f"p99 {percentile(times, 0.99):.1f} ms ({READS} reads)"
    )


async def run_bench(pg: EmbeddedPostgres) -> None:
    schema = ServiceSchema(
        f"bench_{secrets.token_hex(3)}", service("stats-projector").migrations_dir()
    )
    password = secrets.token_urlsafe(16)
    admin = await connect(pg.admin_dsn)
    try:
        await migrate(admin, schema, password)
    finally:
        await admin.close()
    pool = await create_pool(role_dsn(pg.admin_dsn, schema, password), max_size=2)
    try:
        events = envelopes()
        projection = Projection(notify=False)
        if os.environ.get("BENCH_NO_LEDGER"):  # the same traffic without the ledger's step

            async def no_ledger(*_: object) -> None:
                return None

            projection._apply_ledger = no_ledger  # type: ignore[method-assign]
        began = time.perf_counter()
        analyze_every = int(os.environ.get("BENCH_ANALYZE_EVERY", "0"))
        admin = await connect(pg.admin_dsn)
        async with pool.acquire() as conn:
            for n, first in enumerate(range(0, len(events), BATCH), 1):
                await apply_batch_once(
                    conn, "bench", events[first : first + BATCH], projection.apply_batch
                )
                if analyze_every and n % analyze_every == 0:
                    # What autovacuum does on a live system (its naptime is a minute, longer
                    # than this run): the planner then knows the ledger's size.
                    await admin.execute(f"analyze {schema.schema}.compliance_ledger")
        await admin.close()
        elapsed = time.perf_counter() - began
        rows = await pool.fetchval("select count(*) from compliance_ledger")
        print(
            f"1. projection: {len(events)} events of {DIALS} dials in {elapsed:.1f} s = "
            f"{len(events) / elapsed:,.0f} events/s ({rows} ledger rows)"
        )
        if os.environ.get("BENCH_NO_LEDGER"):
            return
        # The gateway's role reads as the projector's reader role; here the service role
        # holds it for the bench (the reader role is what the read switches to).
        reader = f"{schema.role}_reader"
        admin = await connect(pg.admin_dsn)
        try:
            await admin.execute(f"grant {reader} to {schema.role}")
            # As autovacuum would have by now (only the table's owner may analyze it).
            await admin.execute(f"analyze {schema.schema}.compliance_ledger")
        finally:
            await admin.close()
        read_models = ReadModels(pool, schema=schema.schema, reader_role=reader)
        analyst = Principal(TENANT, "u-1", "ana", Role.CLIENT_ANALYST, Via.SESSION, "s-1")
        everything = ComplianceFilter()
        deep = await pool.fetchrow(
            "select checked_at, ledger_id from compliance_ledger order by checked_at, ledger_id "
            "offset $1 limit 1",
            int(rows * 0.8),
        )

        async def page(where: ComplianceFilter, after: tuple[datetime, str] | None) -> int:
            async with read_models.compliance(analyst, where, after, 101) as reading:
                return len([r async for r in reading.rows])

        if os.environ.get("BENCH_EXPLAIN"):
            async with read_models.scoped(TENANT) as conn:
                for where in (everything, ComplianceFilter(campaign="cmp-0", decision="refused")):
                    query, args = compliance_query(TENANT, where, None, None, 101)
                    for _ in range(7):  # past the custom plans: the generic one
                        await conn.fetch(query, *args)
                    plan = await conn.fetch("explain analyze " + query, *args)
                    print("\n".join(r[0] for r in plan))
        print("2. one page of 100 (+1) rows, reader role under row-level security:")
        await timed_reads("first page", lambda: page(everything, None))
        await timed_reads("page at 80 % by cursor", lambda: page(everything, (deep[0], deep[1])))
        await timed_reads(
            "one campaign's refusals",
            lambda: page(ComplianceFilter(campaign="cmp-0", decision="refused"), None),
        )
    finally:
        await pool.close()


def main() -> None:
    print(f"$ {os.path.relpath(sys.executable)} {os.path.relpath(__file__)}")
    python = platform.python_version()
    print(f"machine: {platform.platform()}, nproc {os.cpu_count()}, Python {python}")
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
    work.chmod(0o755)
    pg = EmbeddedPostgres(work / "pg" / "data", free_port())
    try:
        pg.start()
        asyncio.run(run_bench(pg))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
