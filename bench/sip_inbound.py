"""Inbound calls through the whole gateway path, next to sipp talking straight to sipp.

Run from the checkout:  .venv/bin/python bench/sip_inbound.py [RATE ...]

Starts the embedded PostgreSQL and broker in a temp dir, the sip-gateway as its own
process (``python -m plateau_sip_gateway``: event store, outbox relay, gRPC), a sipp agent
(UAS) registered with digest auth, and a driver standing in for the acd: it reads
``call.offered`` from the broker and calls ``CallControl.ConnectAgent``. For each rate
(calls/s, default 50 100 150 200) sipp plays the carrier for ``SECONDS`` and the bench
prints achieved calls/s, failed calls, post-dial delay (INVITE -> 180) p50/p99 and the
gateway's CPU milliseconds per call; then the same carrier scenario against a sipp agent
directly (the baseline). Figures only: nothing here asserts a speed. Needs ``sipp``.

A call not answered within ``ANSWER_TIMEOUT_MS`` counts as failed. When a run has failed
calls, or is stopped, the temp dir is kept (its path is printed) with ``gateway.log``,
``broker.log`` and sipp's files (the agent's ``agent_*_errors.log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from plateau_runtime.embedded import EmbeddedBroker, EmbeddedPostgres
from plateau_sip_gateway.testing.inbound import OfferDriver, driving, gateway_process
from plateau_sip_gateway.testing.sipp import (
    SippMissingError,
    agent_answers,
    agent_answers_at_once,
    call_counts,
    carrier_talks,
    free_port,
    read_rtt,
    register,
    run_sipp,
    sipp_agent,
    sipp_binary,
    start_sipp,
    write,
)

SECONDS = 5
TALK_MS = 500
DNIS = "053000100"
EXTENSION = "1001"
ANSWER_TIMEOUT_MS = 20_000


def prepare_carrier(cwd: Path) -> str:
    """The carrier scenario, written afresh, with no delays left from a previous rate."""
    for old in cwd.glob("carrier_*_rtt.csv"):
        old.unlink()
    scenario = carrier_talks(TALK_MS, ANSWER_TIMEOUT_MS, measure="post_dial_delay")
    return write(cwd, "carrier.xml", scenario)


async def carrier_run(target: str, rate: int, cwd: Path) -> tuple[int, int, float, list[float]]:
    """Successful and failed calls, seconds, post-dial delays in ms."""
    scenario = prepare_carrier(cwd)
    calls = rate * SECONDS
    started = time.perf_counter()
    carrier = await start_sipp(
        [
            *["-sf", scenario, "-s", DNIS, target],
            *["-m", str(calls), "-r", str(rate), "-l", str(rate * 4)],
            *["-trace_rtt", "-rtt_freq", "1"],
        ],
        cwd,
        timeout=SECONDS * 4 + ANSWER_TIMEOUT_MS / 1000 + 40,
    )
    _, output = await carrier.result()
    elapsed = time.perf_counter() - started
    ok, failed = call_counts(output)
    return ok, failed, elapsed, read_rtt(cwd, "carrier")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@contextlib.contextmanager
def platform(work: Path) -> Iterator[tuple[str, EmbeddedBroker]]:
    postgres = EmbeddedPostgres(work / "pg", free_port(socket.SOCK_STREAM))
    broker = EmbeddedBroker(free_port(socket.SOCK_STREAM), work / "broker.log")
    postgres.start()
    broker.start()
    try:
        yield postgres.admin_dsn, broker
    finally:
        broker.stop()
        postgres.stop()


def make_work_dir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
    work.chmod(0o755)  # PostgreSQL may run as another user when the bench runs as root
    return work


async def main(rates: list[int]) -> None:
    try:
        sipp_binary()
    except SippMissingError as exc:
        sys.exit(str(exc))
    work = make_work_dir()
    failures = 0
    password = secrets.token_urlsafe(12)
    print(f"inbound calls, {SECONDS} s per rate, {TALK_MS} ms talk; PDD = INVITE -> 180")
    header = f"{'path':<28}{'rate':>6}{'calls/s':>9}{'failed':>8}{'PDD p50':>9}{'p99':>8}"
    try:
        with platform(work) as (admin_dsn, broker):
            async with (
                gateway_process(
                    admin_dsn,
                    broker.bootstrap,
                    work,
                    {EXTENSION: password},
                    tenant="bench",
                    max_calls=5000,
                ) as gateway,
                sipp_agent(work, agent_answers_at_once(), trace=True) as agent,
            ):
                scenario = write(work, "register.xml", register(EXTENSION, password, agent.port))
                code, output = await run_sipp(
                    ["-sf", scenario, "-m", "1", gateway.sip_target], work, timeout=30
                )
                if code != 0:
                    sys.exit(f"the agent could not register:\n{output}")
                driver = OfferDriver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
                async with driving(driver):
                    process = psutil.Process(gateway.process.pid)
                    print(header + f"{'CPU ms/call':>13}")
                    for rate in rates:
                        cpu = process.cpu_times()
                        ok, failed, seconds, delays = await carrier_run(
                            gateway.sip_target, rate, work
                        )
                        used = process.cpu_times()
                        failures += failed + max(rate * SECONDS - ok - failed, 0)
                        cpu_s = (used.user - cpu.user) + (used.system - cpu.system)
                        per_call = 1000 * cpu_s / max(ok + failed, 1)
                        print(
                            f"{'sipp -> gateway -> sipp':<28}{rate:>6}{ok / seconds:>9.1f}"
                            f"{failed:>8}{percentile(delays, 50):>9.1f}"
                            f"{percentile(delays, 99):>8.1f}{per_call:>13.2f}",
                            flush=True,
                        )
                if driver.errors:
                    print(f"ConnectAgent failed {len(driver.errors)} times: {driver.errors[:3]}")
        print(header)
        for rate in rates:
            async with sipp_agent(work, agent_answers()) as agent:
                ok, failed, seconds, delays = await carrier_run(
                    f"127.0.0.1:{agent.port}", rate, work
                )
            failures += failed + max(rate * SECONDS - ok - failed, 0)
            print(
                f"{'sipp -> sipp (baseline)':<28}{rate:>6}{ok / seconds:>9.1f}{failed:>8}"
                f"{percentile(delays, 50):>9.1f}{percentile(delays, 99):>8.1f}",
                flush=True,
            )
    except BaseException:
        # Keep the gateway's log (and sipp's files) to explain a failed or stopped run.
        print(f"stopped: kept {work}", file=sys.stderr, flush=True)
        raise
    if failures:
        print(f"{failures} calls failed: kept {work} (gateway.log, agent_*_errors.log)")
    else:
        shutil.rmtree(work, ignore_errors=True)


def _terminate(signum: int, _: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the servers are stopped.
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [50, 100, 150, 200]))
