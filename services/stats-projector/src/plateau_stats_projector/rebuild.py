"""Rebuild the read models from the event stores and swap them in (``plateau projections
rebuild``).

The event stores are the truth; the read models can always be recomputed from them. A
rebuild:

1. migrates a fresh shadow schema (``<schema>_rebuild``) with the projector's migrations
   and copies the tenants' settings into it (they are configuration, not events);
2. replays every source store into it, store after store, a batch of events per
   transaction through ``apply_batch_once`` under the projector's consumer name, so that
   the shadow's checkpoints say exactly what it holds and its store marks up to where
   (streams of different stores arrive out of order with one another: the projection does
   not depend on that order);
3. locks the live checkpoints (the running projector's next event waits), catches the
   shadow up with whatever the stores recorded meanwhile, and in the same transaction
   replaces the live read models and the projector's checkpoints with the shadow's;
4. drops the shadow schema and its roles.

Readers see the old figures until the swap commits and the rebuilt ones after it; the
running projector then goes on from the rebuilt checkpoints, skipping what the rebuild
already applied. It runs as an administrative role, the only one that may read every
service's store.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from plateau_runtime.consumer import StoreMark, apply_batch_once
from plateau_runtime.db import Connection, connect, create_pool
from plateau_runtime.errors import PlateauError
from plateau_runtime.eventstore import EventStore
from plateau_runtime.migrations import ServiceSchema, migrate
from plateau_stats_projector.adapters.read_models import Projection
from plateau_stats_projector.entrypoints.consumer import CONSUMER

log = structlog.get_logger(__name__)

#: The read models a rebuild replaces (``tenant_settings`` is configuration and is kept).
REBUILT_TABLES = (
    "call_facts",
    "call_contributions",
    "intervals",
    "rollups",
    "call_records",
    "queue_waiting",
    "agent_status",
    "agent_state_spans",
    "queue_settings",
    "campaign_status",
    "campaign_dialled_contacts",
    "compliance_ledger",
)
_BATCH = 2000


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild replayed and swapped in."""

    events_read: int
    events_applied: int
    #: Each source store's head position the rebuilt read models include.
    heads: dict[str, int]
    rows: dict[str, int]


class _Replayer:
    """Replays stores into the shadow schema on one connection, remembering positions."""

    def __init__(self, conn: Connection, stores: Sequence[EventStore], consumer: str) -> None:
        self._conn = conn
        self._stores = stores
        self._consumer = consumer
        self._projection = Projection(notify=False)
        self.positions = {store.schema: 0 for store in stores}
        self.read = 0
        self.applied = 0

    async def catch_up(self) -> None:
        """Apply every event recorded after the positions reached so far, store by store,
        a read batch per transaction (``apply_batch_once``)."""
        for store in self._stores:
            while True:
                batch = await store.read_all(self.positions[store.schema], _BATCH, self._conn)
                if not batch:
                    break
                self.read += len(batch)
                applied = await apply_batch_once(
                    self._conn,
                    self._consumer,
                    [stored.envelope for stored in batch],
                    self._projection.apply_batch,
                    [StoreMark(store.schema, batch[-1].position, batch[-1].hash.hex())],
                )
                self.applied += len(applied)
                self.positions[store.schema] = batch[-1].position


async def rebuild(
    admin_dsn: str,
    schema: str,
    sources: Sequence[str],
    migrations_dir: Path | None,
    *,
    consumer: str = CONSUMER,
) -> RebuildReport:
    """Rebuild the read models of ``schema`` from the stores in ``sources`` and swap them in."""
    shadow = ServiceSchema(f"{schema}_rebuild", migrations_dir)
    conn = await connect(admin_dsn)
    pool = await create_pool(admin_dsn, min_size=1, max_size=1)
    try:
        await _check_migrated(conn, schema, sources)
        await _drop_shadow(conn, shadow)
        await migrate(conn, shadow, secrets.token_urlsafe(24))
        await conn.execute(
            f"insert into {shadow.schema}.tenant_settings select * from {schema}.tenant_settings"
        )
        await conn.execute(f"set search_path = {shadow.schema}")
        replayer = _Replayer(conn, [EventStore(pool, source) for source in sources], consumer)
        await replayer.catch_up()
        log.info("rebuild.replayed", events=replayer.read, applied=replayer.applied)
        rows: dict[str, int] = {}
        async with conn.transaction():
            # The live projector claims each event in consumer_checkpoints: holding this
            # lock makes it wait, so nothing it applies can be lost by the swap.
            await conn.execute(f"lock table {schema}.consumer_checkpoints in exclusive mode")
            await replayer.catch_up()
            for table in REBUILT_TABLES:
                await conn.execute(f"delete from {schema}.{table}")
                columns = await _written_columns(conn, schema, table)
                status = await conn.execute(
                    f"insert into {schema}.{table} ({columns}) "
                    f"select {columns} from {shadow.schema}.{table}"
                )
                rows[table] = int(status.split()[-1])
            await conn.execute(
                f"delete from {schema}.consumer_checkpoints where consumer = $1", consumer
            )
            await conn.execute(
                f"insert into {schema}.consumer_checkpoints select * from "
                f"{shadow.schema}.consumer_checkpoints where consumer = $1",
                consumer,
            )
            # Up to where in each store the swapped-in read models go (report_provenance).
            await conn.execute(
                f"delete from {schema}.consumer_store_marks where consumer = $1", consumer
            )
            await conn.execute(
                f"insert into {schema}.consumer_store_marks select * from "
                f"{shadow.schema}.consumer_store_marks where consumer = $1",
                consumer,
            )
        await conn.execute("reset search_path")
        await _drop_shadow(conn, shadow)
    finally:
        await conn.close()
        await pool.close()
    log.info("rebuild.swapped", heads=replayer.positions, rows=rows)
    return RebuildReport(replayer.read, replayer.applied, dict(replayer.positions), rows)


async def _check_migrated(conn: asyncpg.Connection, schema: str, sources: Sequence[str]) -> None:
    needed = [f"{schema}.intervals", *(f"{source}.events" for source in sources)]
    for table in needed:
        if await conn.fetchval("select to_regclass($1)", table) is None:
            raise PlateauError(
                f"{table} does not exist, so the read models cannot be rebuilt",
                "run `plateau migrate` first (plateau up runs it)",
            )


async def _written_columns(conn: asyncpg.Connection, schema: str, table: str) -> str:
    """The columns a row is written with: generated ones (the report's JSON of intervals
    and roll-ups) are computed again by the table they go into."""
    names = await conn.fetch(
        "select quote_ident(column_name) as name from information_schema.columns "
        "where table_schema = $1 and table_name = $2 and is_generated = 'NEVER' "
        "order by ordinal_position",
        schema,
        table,
    )
    return ", ".join(row["name"] for row in names)


async def _drop_shadow(conn: asyncpg.Connection, shadow: ServiceSchema) -> None:
    await conn.execute(f"drop schema if exists {shadow.schema} cascade")
    for role in (f"{shadow.role}_reader", shadow.role):
        if await conn.fetchval("select 1 from pg_roles where rolname = $1", role):
            await conn.execute(f"drop owned by {role}")
            await conn.execute(f"drop role {role}")
