"""``plateau backup`` and ``plateau restore`` on a large store: time, size and peak memory.

Run from the checkout:  .venv/bin/python bench/backup.py [EVENTS]   (default 200,000)

It starts its own embedded PostgreSQL in a temporary directory (removed afterwards),
migrates every service's schema, records EVENTS call facts in the gateway's store, then runs
the real commands as child processes: ``plateau backup --admin-url`` and ``plateau restore
--admin-url`` into a second, empty database (which includes verifying every chain and
rebuilding the read models). It prints each command's wall time, events per second, the
archive's size and the child's peak resident memory (sampled every 50 ms), which must stay
flat as EVENTS grows: both commands stream. Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from plateau_cli.provision import ensure_database, migrate_services, with_database
from plateau_contracts.events.calls import CallOffered
from plateau_runtime.db import create_pool
from plateau_runtime.embedded import EmbeddedPostgres, free_port
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend
from plateau_runtime.services import SERVICES

BATCH = 2000


async def _prepare(server: str, events: int) -> tuple[str, str]:
    passwords = {s.name: secrets.token_urlsafe(16) for s in SERVICES}
    source, target = with_database(server, "source"), with_database(server, "target")
    for database in ("source", "target"):
        await ensure_database(server, database)
    await migrate_services(source, SERVICES, passwords)
    await migrate_services(target, SERVICES, passwords)
    pool = await create_pool(source, max_size=2)
    try:
        store = EventStore(pool, "sip_gateway")
        for start in range(0, events, BATCH):
            appends = [
                StreamAppend(
                    f"call-bench-{n}",
                    [
                        NewEvent(
                            CallOffered(
                                call_id=f"bench-{n}",
                                ani="+242066123456",
                                dnis="+242053000100",
                                trunk="mno",
                                sip_call_id=f"sip-{n}",
                            ),
                            tenant="demo",
                        )
                    ],
                )
                for n in range(start, min(events, start + BATCH))
            ]
            await store.append_many(appends)
    finally:
        await pool.close()
    return source, target


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, and output of one ``plateau`` command."""
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "plateau_cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    output = child.stdout.read() if child.stdout else ""
    elapsed = time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"plateau {args[0]} failed: {output}")
    return elapsed, peak / 2**20, output


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-backup-"))
    work.chmod(0o755)
    postgres = EmbeddedPostgres(work / "pg" / "data", free_port())
    try:
        postgres.start()
        began = time.perf_counter()
        source, target = asyncio.run(_prepare(postgres.admin_dsn, events))
        print(f"recorded {events:,} events in {time.perf_counter() - began:.1f} s")
        key = work / "backup.key"
        key.write_bytes(os.urandom(32))
        archive = work / "bench.plateau-backup"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
        env["PLATEAU_HOME"] = str(work / "no-home")
        seconds, peak, _ = _run(
            ["backup", "--admin-url", source, "--key-file", str(key), "--output", str(archive)],
            env,
        )
        size = archive.stat().st_size / 2**20
        print(
            f"backup:  {seconds:6.1f} s  {events / seconds:9,.0f} events/s  "
            f"archive {size:.1f} MiB ({archive.stat().st_size / events:.0f} B/event)  "
            f"peak RSS {peak:.0f} MiB"
        )
        seconds, peak, output = _run(
            ["restore", str(archive), "--admin-url", target, "--key-file", str(key)], env
        )
        print(
            f"restore: {seconds:6.1f} s  {events / seconds:9,.0f} events/s  "
            f"(authenticate, load, verify chains, rebuild read models)  peak RSS {peak:.0f} MiB"
        )
        print("  " + "\n  ".join(output.strip().splitlines()))
    finally:
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
