"""One outbox relay as its own OS process, for the tests that SIGKILL it mid-publication.

Usage: ``python relay_process.py SCHEMA BATCH_SIZE`` with ``PLATEAU_DATABASE_URL`` and
``PLATEAU_KAFKA_BOOTSTRAP`` in the environment (the DSN holds a password: not in argv).
SIGTERM stops it cleanly; it exits 3 if the relay stops on an event it cannot route.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore
from plateau_runtime.outbox import OutboxRelay, UnpublishableEventError


async def main(schema: str, batch_size: int) -> int:
    pool = await create_pool(os.environ["PLATEAU_DATABASE_URL"], max_size=2)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    relay = OutboxRelay(
        EventStore(pool, schema),
        pool,
        os.environ["PLATEAU_KAFKA_BOOTSTRAP"],
        batch_size=batch_size,
        idle_poll=0.02,
    )
    print(f"relay-process started pid={os.getpid()}", flush=True)
    try:
        await relay.run(stop)
    except UnpublishableEventError:
        return 3
    finally:
        await pool.close()
    print(f"relay-process stopped at position {relay.position}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
