"""Several gateway replicas over one schema: who holds each call, and everyone's bindings.

* ``CallOwners`` (table ``call_owners``): a replica records each call it opens (in the
  background: SIP does not wait on it) and, for an ``Originate``, claims the attempt first
  (synchronously, with a unique key) so that a retry landing on another replica gets the
  same call id instead of a second dial. A replica asked about a call it does not hold
  reads the owner here, and only then.
* ``BindingsMirror`` (table ``bindings``): a replica writes its own registrar's bindings
  through (one extension at a time, the latest state wins) and mirrors the other
  replicas' into ``PeerBindings``: a full load at start, ``NOTIFY`` on each change, and a
  periodic full resync as a safety net (a lost notification, a dropped listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from plateau_sip_gateway.domain.peers import PeerBindings, binding_from_json, binding_to_json
from plateau_sip_gateway.domain.registrar import Binding

log = structlog.get_logger(__name__)

OWNERS_KEPT = timedelta(days=1)
"""Owner rows older than this are pruned: no call lasts that long."""


@dataclass(frozen=True)
class Owner:
    """The replica holding a call, and where its ``CallControl`` is reached."""

    replica: str
    address: str


class CallOwners:
    """This replica's side of ``call_owners``."""

    def __init__(self, pool: asyncpg.Pool, replica: str, address: str) -> None:
        self._pool = pool
        self.replica = replica
        self.address = address
        self._pending: set[asyncio.Task[None]] = set()
        self.failures = 0

    def opened(self, tenant: str, call_id: str) -> asyncio.Future[None]:
        """Record that this replica holds ``call_id`` (in the background: SIP does not
        wait); done once recorded (or failed, which is logged)."""
        task = asyncio.ensure_future(self._insert(tenant, call_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _insert(self, tenant: str, call_id: str) -> None:
        try:
            await self._pool.execute(
                "insert into call_owners (call_id, tenant, replica, address) "
                "values ($1, $2, $3, $4) on conflict do nothing",
                call_id,
                tenant,
                self.replica,
                self.address,
            )
        except Exception:
            self.failures += 1
            log.exception("sip_gateway.call_owner_not_recorded", call_id=call_id)

    async def claim(self, tenant: str, attempt: str, call_id: str) -> str:
        """Claim ``attempt`` for a new call ``call_id`` held here; the call id that holds
        the attempt (``call_id`` when this claim won, an earlier one's otherwise)."""
        async with self._pool.acquire() as conn:
            won = await conn.fetchval(
                "insert into call_owners (call_id, tenant, replica, address, attempt) "
                "values ($1, $2, $3, $4, $5) "
                "on conflict (tenant, attempt) where attempt is not null do nothing "
                "returning call_id",
                call_id,
                tenant,
                self.replica,
                self.address,
                attempt,
            )
            if won is not None:
                return str(won)
            earlier = await conn.fetchval(
                "select call_id from call_owners where tenant = $1 and attempt = $2",
                tenant,
                attempt,
            )
        if earlier is None:  # released between the two statements: claim again
            return await self.claim(tenant, attempt, call_id)
        return str(earlier)

    async def release(self, call_id: str) -> None:
        """Forget a claim whose dial never started (a retry may dial again)."""
        await self._pool.execute(
            "delete from call_owners where call_id = $1 and replica = $2", call_id, self.replica
        )

    async def owner(self, tenant: str, call_id: str) -> Owner | None:
        """Who holds ``call_id`` of ``tenant``, if any replica recorded it."""
        row = await self._pool.fetchrow(
            "select replica, address from call_owners where call_id = $1 and tenant = $2",
            call_id,
            tenant,
        )
        return None if row is None else Owner(row["replica"], row["address"])

    async def held_elsewhere(self, call_ids: list[str]) -> set[str]:
        """Those of ``call_ids`` that other replicas recorded (a restart leaves them alone)."""
        rows = await self._pool.fetch(
            "select call_id from call_owners where replica <> $1 and call_id = any($2::text[])",
            self.replica,
            call_ids,
        )
        return {row["call_id"] for row in rows}

    async def prune(self) -> int:
        """Drop owner rows older than ``OWNERS_KEPT``; how many."""
        status = await self._pool.execute(
            "delete from call_owners where opened_at < now() - $1::interval", OWNERS_KEPT
        )
        return int(status.split()[-1])

    async def drain(self, timeout: float = 10.0) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)


_NOTIFY = "select pg_notify($1, $2)"


class BindingsMirror:
    """Writes this replica's bindings through, mirrors the others' into ``peers``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        peers: PeerBindings,
        *,
        resync_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        on_resync: Callable[[], Any] | None = None,
    ) -> None:
        self._pool = pool
        self.peers = peers
        self.replica = peers.replica
        self._resync_s = resync_s
        self._clock = clock
        self._on_resync = on_resync
        self._channel = ""
        self._dirty: dict[str, tuple[Binding, ...]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self.failures = 0

    # -- writing this replica's bindings ------------------------------------------------

    def changed(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        """``aor``'s bindings on this replica are now ``bindings`` (written in the
        background; a later change of the same extension replaces a pending one)."""
        self._dirty[aor] = bindings
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_dirty())

    async def _write_dirty(self) -> None:
        while self._dirty:
            aor = next(iter(self._dirty))
            bindings = self._dirty.pop(aor)
            try:
                await self._write(aor, bindings)
            except Exception:
                self.failures += 1
                log.exception("sip_gateway.binding_not_shared", extension=aor)

    async def _write(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "delete from bindings where replica = $1 and aor = $2", self.replica, aor
            )
            await conn.executemany(
                "insert into bindings (replica, aor, contact, binding, expires_at) "
                "values ($1, $2, $3, $4, $5) on conflict (replica, aor, contact) do update "
                "set binding = excluded.binding, expires_at = excluded.expires_at",
                [
                    (self.replica, aor, b.contact, binding_to_json(b), b.expires_at)
                    for b in bindings
                ],
            )
            await conn.execute(_NOTIFY, await self._channel_name(conn), self._payload(aor))

    async def clear_own(self) -> None:
        """Delete every binding this replica wrote (its stop, or what a crash left)."""
        self._dirty.clear()
        if self._writer is not None:
            await asyncio.wait([self._writer], timeout=10)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("delete from bindings where replica = $1", self.replica)
            await conn.execute(_NOTIFY, await self._channel_name(conn), self._payload("*"))

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every change is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break

    def _payload(self, aor: str) -> str:
        return json.dumps({"replica": self.replica, "aor": aor})

    async def _channel_name(self, conn: Any) -> str:
        # One channel per schema: several installations (or tests) may share a database.
        if not self._channel:
            schema = await conn.fetchval("select current_schema()")
            self._channel = f"sip_gateway_bindings_{schema}"[:63]
        return self._channel

    # -- mirroring the others' ------------------------------------------------------------

    async def load(self) -> int:
        """Replace the mirror with every other replica's live rows; how many."""
        # Under the lock of single reloads: an older read never lands over a newer one.
        async with self._reload_lock:
            rows = await self._pool.fetch(
                "select replica, binding from bindings where replica <> $1 and expires_at > $2",
                self.replica,
                self._clock(),
            )
            self.peers.load(self._bindings(rows))
        return len(rows)

    async def reload(self, aor: str) -> None:
        """Re-read one extension's rows from every replica."""
        async with self._reload_lock:
            rows = await self._pool.fetch(
                "select replica, binding from bindings where aor = $1 and replica <> $2",
                aor,
                self.replica,
            )
            held: dict[str, list[Binding]] = {}
            for replica, binding in self._bindings(rows):
                held.setdefault(replica, []).append(binding)
            self.peers.replace(aor, held)

    def _bindings(self, rows: Iterable[asyncpg.Record]) -> list[tuple[str, Binding]]:
        found = []
        for row in rows:
            try:
                found.append((row["replica"], binding_from_json(row["binding"])))
            except ValueError:
                log.warning("sip_gateway.unreadable_binding", replica=row["replica"])
        return found

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Listen for changes and resync every ``resync_s`` until ``stop``."""
        while not stop.is_set():
            try:
                await self._listen_until(stop, ready)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("sip_gateway.bindings_listener_lost")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(self._resync_s, 5.0))
        for task in list(self._reloads):
            task.cancel()

    async def _listen_until(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        async with self._pool.acquire() as conn:
            channel = await self._channel_name(conn)
            lost = asyncio.Event()  # the listening connection dropped: listen again now
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(channel, self._heard)
            try:
                await self.load()
                if ready is not None:
                    ready.set()
                while not stop.is_set():
                    await _first_of(stop, lost, timeout=self._resync_s)
                    if stop.is_set() or lost.is_set() or conn.is_closed():
                        break
                    await self.load()
                    await self._pool.execute(
                        "delete from bindings where replica = $1 and expires_at <= $2",
                        self.replica,
                        self._clock(),
                    )
                    if self._on_resync is not None:
                        await self._on_resync()
            finally:
                # A dropped connection is already gone from the pool: nothing to undo.
                with contextlib.suppress(asyncpg.InterfaceError, OSError, asyncpg.PostgresError):
                    if not lost.is_set() and not conn.is_closed():
                        await conn.remove_listener(channel, self._heard)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            change = json.loads(str(payload))
            replica, aor = str(change["replica"]), str(change["aor"])
        except (ValueError, KeyError, TypeError):
            log.warning("sip_gateway.odd_binding_notification", payload=str(payload)[:200])
            return
        if replica == self.replica:
            return
        task = asyncio.ensure_future(self.load() if aor == "*" else self.reload(aor))
        self._reloads.add(task)
        task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[Any]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            log.error("sip_gateway.binding_reload_failed", exc_info=task.exception())


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of ``events`` is set, or ``timeout`` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


__all__ = ["OWNERS_KEPT", "BindingsMirror", "CallOwners", "Owner"]
