"""Records the gateway's facts in its event store, sharing transactions (group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.eventstore import EventStore, GroupCommitter, NewEvent

log = structlog.get_logger(__name__)


class Recorder:
    """Appends facts of calls and extensions; one call's facts are appended in order.

    ``record`` does not wait: SIP must not stall on the database. Each stream's appends
    carry the version the gateway expects, so a fact can never land out of order or
    twice; ``drain`` waits for everything queued (shutdown, tests).

    ``record(..., after=future)`` holds that stream's appends until ``future`` is done
    (whatever its outcome): a replica records a call's owner before anyone can read the
    call's first fact and ask about it.
    """

    def __init__(self, store: EventStore, *, max_batch: int = 1000) -> None:
        self._store = store
        self._committer = GroupCommitter(store, max_batch=max_batch)
        self._pending: set[asyncio.Task[None]] = set()
        # Streams whose appends wait on something: their last queued append, in order.
        self._tails: dict[str, asyncio.Future[None]] = {}
        self.failures = 0

    def record(
        self,
        tenant: str,
        events: Sequence[StreamedEvent],
        expected_version: int | None = None,
        after: asyncio.Future[None] | None = None,
    ) -> None:
        """Queue ``events`` (all of one stream) for appending, once ``after`` is done."""
        if not events:
            return
        stream = events[0].stream_id()
        batch = [NewEvent(event, tenant=tenant) for event in events]
        waits_on = after or self._tails.get(stream)
        if waits_on is None:
            task = asyncio.ensure_future(self._append(stream, batch, expected_version))
        else:
            task = asyncio.ensure_future(
                self._append_after(waits_on, stream, batch, expected_version)
            )
            self._tails[stream] = task
            task.add_done_callback(lambda done: self._untail(stream, done))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _untail(self, stream: str, done: asyncio.Future[None]) -> None:
        if self._tails.get(stream) is done:
            del self._tails[stream]

    async def _append_after(
        self,
        waits_on: asyncio.Future[None],
        stream: str,
        events: list[NewEvent],
        expected: int | None,
    ) -> None:
        await asyncio.wait([waits_on])  # its failure is its own to report
        await self._append(stream, events, expected)

    async def append(
        self, tenant: str, events: Sequence[StreamedEvent], expected_version: int | None = None
    ) -> None:
        """Append ``events`` (all of one stream) and wait until they are committed."""
        if events:
            batch = [NewEvent(event, tenant=tenant) for event in events]
            await self._committer.append(events[0].stream_id(), batch, expected_version)

    async def _append(self, stream: str, events: list[NewEvent], expected: int | None) -> None:
        try:
            await self._committer.append(stream, events, expected)
        except Exception:
            self.failures += 1
            log.exception("sip_gateway.record_failed", stream=stream, events=len(events))

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for every queued append (bounded)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)
