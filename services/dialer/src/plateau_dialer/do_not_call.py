"""The dialer's application layer for the tenant's do-not-call list.

Each change records its facts (``dnc.number_added`` / ``dnc.number_removed``) and the
dialer's working copy (table ``do_not_call``, read by imports and by the compliance check
of every dial) in one transaction. Changes of one tenant's list are serialised by a
transaction-scoped advisory lock, so two requests naming the same number never both record
it. A file of numbers is read by the customer files' reader (in a worker thread), whole,
before anything is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import asyncpg
import structlog

from plateau_contracts.events.dialer import DoNotCallNumberAdded, DoNotCallNumberRemoved
from plateau_dialer.domain import do_not_call as dnc
from plateau_dialer.domain.contacts_file import ContactFile, FileHints, read_contact_file
from plateau_runtime.db import Connection
from plateau_runtime.eventstore import EventStore, NewEvent, StreamAppend

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Listed:
    """One number of the list as the dialer keeps it."""

    number: str
    added_at: datetime
    source: str
    reason: str | None


@dataclass(frozen=True)
class ListImport:
    """What a file of numbers did: the file as read, and the numbers it added."""

    file: ContactFile
    change: dnc.Change


class DoNotCallList:
    """The do-not-call lists of one dialer's tenants, over its event store."""

    def __init__(self, store: EventStore, pool: asyncpg.Pool, *, default_region: str = "CG"):
        self._store = store
        self._pool = pool
        self._default_region = default_region

    async def add(
        self,
        tenant: str,
        texts: Sequence[str],
        *,
        reason: str | None,
        added_by: str,
        region: str | None = None,
    ) -> dnc.Change:
        """Put numbers on the list (``BadNumberError`` before anything is recorded)."""
        numbers = dnc.read_numbers(texts, region or self._default_region)
        return await self._record(
            tenant,
            numbers,
            lambda listed: dnc.add(
                numbers, listed, reason=reason, source="manual", added_by=added_by
            ),
        )

    async def remove(
        self,
        tenant: str,
        texts: Sequence[str],
        *,
        reason: str | None,
        removed_by: str,
        region: str | None = None,
    ) -> dnc.Change:
        """Take numbers off the list (``BadNumberError`` before anything is recorded)."""
        numbers = dnc.read_numbers(texts, region or self._default_region)
        return await self._record(
            tenant,
            numbers,
            lambda listed: dnc.remove(numbers, listed, reason=reason, removed_by=removed_by),
        )

    async def import_file(
        self,
        tenant: str,
        *,
        filename: str,
        source: BinaryIO,
        hints: FileHints,
        reason: str | None,
        added_by: str,
        region: str | None = None,
    ) -> ListImport:
        """Read a file of numbers whole, then add its readable numbers (``ContactFileRefused``
        propagates: nothing is recorded then)."""
        rules = dnc.listing_rules(region or self._default_region)
        file = await asyncio.to_thread(read_contact_file, source, rules, hints)
        numbers = [c.number for c in file.contacts]
        change = await self._record(
            tenant,
            numbers,
            lambda listed: dnc.add(
                numbers, listed, reason=reason, source=f"file:{filename}", added_by=added_by
            ),
        )
        return ListImport(file, change)

    async def entries(self, tenant: str) -> AsyncIterator[Listed]:
        """The tenant's list in number order (read with a cursor: it may be long)."""
        async with self._pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(
                "select number, added_at, source, reason from do_not_call "
                "where tenant = $1 order by number",
                tenant,
            ):
                yield Listed(row["number"], row["added_at"], row["source"], row["reason"])

    async def _record(
        self,
        tenant: str,
        numbers: list[str],
        decide: Callable[[frozenset[str]], dnc.Change],
    ) -> dnc.Change:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "select pg_advisory_xact_lock(hashtextextended('dialer.do_not_call:' || $1, 0))",
                tenant,
            )
            rows = await conn.fetch(
                "select number from do_not_call where tenant = $1 and number = any($2::text[])",
                tenant,
                numbers,
            )
            change = decide(frozenset(r["number"] for r in rows))
            await self._store.append_many(
                [
                    StreamAppend(e.stream_id(tenant), [NewEvent(e, tenant=tenant)])
                    for e in change.events
                ],
                conn=conn,
            )
            await _keep(conn, tenant, change)
        if change.events:
            log.info(
                "dialer.do_not_call_changed",
                tenant=tenant,
                kind=change.events[0].event_type,
                numbers=len(change.events),
            )
        return change


async def _keep(conn: Connection, tenant: str, change: dnc.Change) -> None:
    """The working copy, in the transaction of the events."""
    added = [e for e in change.events if isinstance(e, DoNotCallNumberAdded)]
    removed = [e.number for e in change.events if isinstance(e, DoNotCallNumberRemoved)]
    if added:
        await conn.executemany(
            "insert into do_not_call (tenant, number, source, reason) values ($1, $2, $3, $4) "
            "on conflict (tenant, number) do nothing",
            [(tenant, e.number, e.source, e.reason) for e in added],
        )
    if removed:
        await conn.execute(
            "delete from do_not_call where tenant = $1 and number = any($2::text[])",
            tenant,
            removed,
        )
