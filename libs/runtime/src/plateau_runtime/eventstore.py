"""The event store: each service's source of truth, in its own PostgreSQL schema.

Appends are serialised per store by a transaction-scoped advisory lock. That costs
write concurrency but buys three properties everything else relies on:

* ``position`` is gap-free and equals commit order, so a reader that follows
  ``position > last`` can never skip an event whose transaction commits late;
* the hash chain (``hash = sha256(prev_hash || canonical_json(envelope))``) is computed
  at append time over a well-defined order;
* a batch of appends to several streams lands atomically in one transaction.

Throughput comes from batching, not from parallel writers: ``append_many`` for one caller's
batch, ``GroupCommitter`` for many concurrent callers (group commit).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from plateau_contracts.envelope import Envelope, EventData, new_event_id, utc_now
from plateau_runtime.db import Connection
from plateau_runtime.errors import ConcurrencyError
from plateau_runtime.tracing import current_traceparent

GENESIS_HASH = bytes(32)
#: ``expected_version`` meaning "the stream must not exist yet".
NO_STREAM = 0


@dataclass(frozen=True)
class NewEvent:
    """An event a service wants recorded; the store assigns version, position and hashes."""

    data: EventData
    tenant: str
    occurred_at: datetime | None = None
    correlation_id: UUID | None = None
    causation_id: UUID | None = None
    event_id: UUID = field(default_factory=new_event_id)


@dataclass(frozen=True)
class StreamAppend:
    """Events for one stream, with the version the caller last saw (None: do not check)."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: int | None = None
    #: Trace context of the caller; defaults to the span active at append time. Set when
    #: the append is carried out by another task (group commit).
    traceparent: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """An event as recorded: its envelope, its global position and its link in the chain."""

    position: int
    envelope: Envelope
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class ChainReport:
    """The verifier's verdict on a store's hash chain."""

    events_checked: int
    head_position: int
    head_hash: str
    first_broken_position: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.first_broken_position is None


def chain_hash(prev_hash: bytes, envelope: Envelope) -> bytes:
    """The chain link of an event: ``sha256(prev_hash || canonical_json(envelope))``."""
    return hashlib.sha256(prev_hash + envelope.canonical_json()).digest()


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"plateau.eventstore.{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_COLUMNS = (
    "position, event_id, stream, stream_version, type, schema_version, tenant, "
    "occurred_at, recorded_at, correlation_id, causation_id, traceparent, data, "
    "prev_hash, hash"
)


def _row_to_event(row: asyncpg.Record) -> StoredEvent:
    envelope = Envelope(
        event_id=row["event_id"],
        type=row["type"],
        schema_version=row["schema_version"],
        stream=row["stream"],
        stream_version=row["stream_version"],
        tenant=row["tenant"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        traceparent=row["traceparent"],
        data=row["data"],
    )
    return StoredEvent(row["position"], envelope, bytes(row["prev_hash"]), bytes(row["hash"]))


class EventStore:
    """Append, read and verify one service's events (schema ``schema``)."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._clock = clock
        self._table = f"{schema}.events"
        self._lock = _lock_key(schema)

    @property
    def schema(self) -> str:
        return self._schema

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection of the store's pool, for a series of ``append_each`` calls."""
        return self._pool.acquire()

    async def lock_appends(self, conn: Connection) -> None:
        """Take the store's append lock until ``conn``'s transaction ends.

        Every append committed before is then visible to ``conn``, and appends by others
        wait. A single-writer process (the acd) reads what it missed and decides under this
        lock, so its decisions never rest on a state that a late commit is about to change.
        """
        await conn.execute("select pg_advisory_xact_lock($1)", self._lock)

    async def try_lock_appends(self, conn: Connection) -> bool:
        """``lock_appends`` if no append is in flight; False at once otherwise."""
        return bool(await conn.fetchval("select pg_try_advisory_xact_lock($1)", self._lock))

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: int | None = None,
        conn: Connection | None = None,
    ) -> list[StoredEvent]:
        """Append to one stream; ``ConcurrencyError`` unless it is at ``expected_version``."""
        return await self.append_many([StreamAppend(stream, events, expected_version)], conn)

    async def append_many(
        self, appends: Sequence[StreamAppend], conn: Connection | None = None
    ) -> list[StoredEvent]:
        """Append to several streams atomically. With ``conn``, join the caller's transaction."""
        if not any(a.events for a in appends):
            return []
        if conn is not None:
            async with conn.transaction():
                stored, _ = await self._append_locked(conn, appends, isolate_conflicts=False)
                return stored
        async with self._pool.acquire() as own, own.transaction():
            stored, _ = await self._append_locked(own, appends, isolate_conflicts=False)
            return stored

    async def append_each(
        self, appends: Sequence[StreamAppend], conn: Connection | None = None
    ) -> list[list[StoredEvent] | ConcurrencyError]:
        """Append several independent requests in one transaction (group commit).

        Unlike ``append_many``, a request whose ``expected_version`` does not hold is
        refused alone: its slot holds the ``ConcurrencyError`` and the others are recorded.
        With ``conn`` (not in a transaction), the transaction is opened on it.
        """
        if conn is None:
            async with self._pool.acquire() as own:
                return await self.append_each(appends, own)
        async with conn.transaction():
            stored, conflicts = await self._append_locked(conn, appends, isolate_conflicts=True)
        results: list[list[StoredEvent] | ConcurrencyError] = []
        cursor = iter(stored)
        for index, append in enumerate(appends):
            conflict = conflicts.get(index)
            if conflict is not None:
                results.append(conflict)
            else:
                results.append([next(cursor) for _ in append.events])
        return results

    async def _append_locked(
        self, conn: Connection, appends: Sequence[StreamAppend], *, isolate_conflicts: bool
    ) -> tuple[list[StoredEvent], dict[int, ConcurrencyError]]:
        # The lock first, in a statement of its own: the read below must take its snapshot
        # after the lock is held, or it could miss the previous holder's commit.
        await conn.execute("select pg_advisory_xact_lock($1)", self._lock)
        streams = sorted({a.stream for a in appends})
        versions: dict[str, int] = {s: 0 for s in streams}
        position, prev_hash = 0, GENESIS_HASH
        # The head of the log and the streams' versions in one round trip.
        for row in await conn.fetch(
            "select * from (select null::text as stream, position as v, hash "
            f"from {self._table} order by position desc limit 1) as head "
            "union all "
            "select stream, max(stream_version)::bigint, null::bytea "
            f"from {self._table} where stream = any($1::text[]) group by stream",
            streams,
        ):
            if row["stream"] is None:
                position, prev_hash = row["v"], bytes(row["hash"])
            else:
                versions[row["stream"]] = row["v"]
        recorded_at = self._clock()
        traceparent = current_traceparent()
        stored: list[StoredEvent] = []
        conflicts: dict[int, ConcurrencyError] = {}
        for index, append in enumerate(appends):
            actual = versions[append.stream]
            if append.expected_version is not None and append.expected_version != actual:
                conflict = ConcurrencyError(append.stream, append.expected_version, actual)
                if not isolate_conflicts:
                    raise conflict
                conflicts[index] = conflict
                continue
            for new in append.events:
                actual += 1
                position += 1
                envelope = Envelope(
                    event_id=new.event_id,
                    type=new.data.event_type,
                    schema_version=new.data.schema_version,
                    stream=append.stream,
                    stream_version=actual,
                    tenant=new.tenant,
                    occurred_at=new.occurred_at or recorded_at,
                    recorded_at=recorded_at,
                    correlation_id=new.correlation_id,
                    causation_id=new.causation_id,
                    traceparent=append.traceparent or traceparent,
                    data=new.data.model_dump(mode="json"),
                )
                link = chain_hash(prev_hash, envelope)
                stored.append(StoredEvent(position, envelope, prev_hash, link))
                prev_hash = link
            versions[append.stream] = actual
        if not stored:
            return stored, conflicts
        columns = list(
            zip(
                *[
                    (
                        s.position,
                        s.envelope.event_id,
                        s.envelope.stream,
                        s.envelope.stream_version,
                        s.envelope.type,
                        s.envelope.schema_version,
                        s.envelope.tenant,
                        s.envelope.occurred_at,
                        s.envelope.recorded_at,
                        s.envelope.correlation_id,
                        s.envelope.causation_id,
                        s.envelope.traceparent,
                        s.envelope.data,
                        s.prev_hash,
                        s.hash,
                    )
                    for s in stored
                ],
                strict=True,
            )
        )
        try:
            await conn.execute(
                f"insert into {self._table} ({_COLUMNS}) select * from unnest("
                "$1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::int[], "
                "$7::text[], $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::uuid[], "
                "$12::text[], $13::jsonb[], $14::bytea[], $15::bytea[])",
                *columns,
            )
        except asyncpg.UniqueViolationError as exc:
            # Only reachable if someone writes without the lock; still never overwrite.
            raise ConcurrencyError(str(exc.detail or "?"), None, -1) from None
        return stored, conflicts

    async def read_stream(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        """A stream's events from ``from_version`` on, in order."""
        rows = await self._pool.fetch(
            f"select {_COLUMNS} from {self._table} where stream = $1 and stream_version >= $2 "
            "order by stream_version",
            stream,
            from_version,
        )
        return [_row_to_event(r) for r in rows]

    async def stream_version(self, stream: str) -> int:
        """The version of a stream's last event (0 when it has none)."""
        value = await self._pool.fetchval(
            f"select coalesce(max(stream_version), 0) from {self._table} where stream = $1", stream
        )
        return int(value)

    async def unfinished_streams(
        self, opening: Sequence[str], closing: Sequence[str]
    ) -> list[tuple[str, str]]:
        """``(stream, tenant)`` of each stream with an event of an ``opening`` type and none
        of a ``closing`` type: the processes a crash left open, found without reading
        every event (a service may index ``events (type, stream)`` to keep it quick)."""
        rows = await self._pool.fetch(
            f"select distinct o.stream, o.tenant from {self._table} o "
            "where o.type = any($1::text[]) and not exists ("
            f"select 1 from {self._table} c where c.stream = o.stream "
            "and c.type = any($2::text[])) order by o.stream",
            list(opening),
            list(closing),
        )
        return [(row["stream"], row["tenant"]) for row in rows]

    async def read_all(
        self, after_position: int = 0, limit: int = 1000, conn: Connection | None = None
    ) -> list[StoredEvent]:
        """Events after a global position, in commit order (never skips a late commit)."""
        executor = conn or self._pool
        rows = await executor.fetch(
            f"select {_COLUMNS} from {self._table} where position > $1 order by position limit $2",
            after_position,
            limit,
        )
        return [_row_to_event(r) for r in rows]

    async def iterate(
        self, after_position: int = 0, batch: int = 5000, conn: Connection | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Every event after a position, batch by batch (for replays and verification).

        With ``conn``, read on it (e.g. inside a restore's transaction)."""
        position = after_position
        while True:
            events = await self.read_all(position, batch, conn)
            if not events:
                return
            for stored in events:
                yield stored
            position = events[-1].position

    async def head(self) -> tuple[int, bytes]:
        """Position and hash of the last event (0 and the genesis hash when empty)."""
        row = await self._pool.fetchrow(
            f"select position, hash from {self._table} order by position desc limit 1"
        )
        return (row["position"], bytes(row["hash"])) if row else (0, GENESIS_HASH)

    async def verify(self, conn: Connection | None = None) -> ChainReport:
        """Recompute the chain from the first event; report the first broken link, if any.

        With ``conn``, read on it: a restore verifies what it loaded before committing."""
        expected_prev, expected_position, checked = GENESIS_HASH, 1, 0
        async for stored in self.iterate(conn=conn):
            problem = None
            if stored.position != expected_position:
                problem = f"position {expected_position} is missing (next is {stored.position})"
            elif stored.prev_hash != expected_prev:
                problem = "prev_hash does not match the previous event's hash"
            elif chain_hash(stored.prev_hash, stored.envelope) != stored.hash:
                problem = "content does not match its hash (the event was altered)"
            if problem is not None:
                return ChainReport(
                    checked,
                    stored.position - 1,
                    expected_prev.hex(),
                    first_broken_position=min(stored.position, expected_position),
                    problem=problem,
                )
            checked += 1
            expected_prev, expected_position = stored.hash, stored.position + 1
        return ChainReport(checked, expected_position - 1, expected_prev.hex())


class GroupCommitter:
    """Turns many concurrent appends into few transactions (group commit).

    Appends to one store are serialised (see the module docstring), so a service that
    records facts for many calls at once would wait on one commit per fact. The committer
    queues concurrent requests and records each queue in one ``append_each`` transaction:
    nobody waits when the store is idle, and under load a commit carries everyone who
    arrived during the previous one. Each caller still gets its own result, or its own
    ``ConcurrencyError``.
    """

    def __init__(self, store: EventStore, *, max_batch: int = 1000) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: list[tuple[StreamAppend, asyncio.Future[list[StoredEvent]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> list[StoredEvent]:
        """Record events as ``EventStore.append`` would, sharing a transaction with others."""
        if not events:
            return []
        future: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        request = StreamAppend(stream, events, expected_version, current_traceparent())
        self._queue.append((request, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        # One connection for as long as requests keep coming: under load a commit follows
        # another, and releasing to the pool in between would cost a reset round trip each.
        while self._queue:
            try:
                async with self._store.connection() as conn:
                    await self._flush_on(conn)
            except BaseException as exc:
                # No connection (or cancelled): fail everyone still waiting.
                waiting, self._queue = self._queue, []
                for _, future in waiting:
                    if future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return

    async def _flush_on(self, conn: Connection) -> None:
        """Commit queued requests on ``conn`` until none are left, or one batch failed
        (then the connection goes back to the pool and the next batch takes another)."""
        while self._queue:
            batch, self._queue = (
                self._queue[: self._max_batch],
                self._queue[self._max_batch :],
            )
            try:
                results = await self._store.append_each([request for request, _ in batch], conn)
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller gave up (cancelled); its events are recorded
                    continue
                if isinstance(result, ConcurrencyError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
