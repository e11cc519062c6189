"""Live supervision pushed to browsers: Server-Sent Events fed by the projector's NOTIFY.

One LISTEN connection per process (:class:`ChangeFeed`) receives every read-model change
and fans it out to the streams of that change's tenant. A stream coalesces what changed
since it last wrote (a set of queue, agent and campaign ids, so a burst costs one read and
memory stays bounded), reads those rows under the principal's tenant and scope, and writes
one event per row.

A stream starts with a snapshot of everything visible, or, when the client reconnects with
the ``Last-Event-ID`` of an event of this process and the feed still remembers every change
notice since (:data:`HISTORY` notices, all tenants together), with only the rows changed
since then. Either way a client never misses a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from plateau_access_gateway.domain.principal import Principal
from plateau_access_gateway.entrypoints.http_principal import current_principal
from plateau_access_gateway.entrypoints.http_supervision import Kind, LiveViews

log = structlog.get_logger(__name__)

#: The stats projector's notification channel (its read_models.CHANNEL; services share no
#: code, the name is the contract).
CHANNEL = "plateau_read_models"

Caller = Annotated[Principal, Depends(current_principal)]

#: How many change notices (all tenants) the feed remembers for streams that resume.
HISTORY = 4096

#: The kinds of rows a stream carries, in snapshot order.
KINDS: tuple[Kind, ...] = ("queue", "agent", "campaign")


@dataclass(frozen=True)
class Notice:
    """One change notice: its generation, its tenant (None: every tenant must re-read
    everything, as after the LISTEN connection was lost) and the ids it names."""

    generation: int
    tenant: str | None
    queues: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()


@dataclass(eq=False)  # each subscription is its own (hashed by identity)
class Subscription:
    """What changed for one stream since it last looked (ids per kind; a resync flag)."""

    tenant: str
    queues: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    campaigns: set[str] = field(default_factory=set)
    resync: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> tuple[set[str], set[str], set[str], bool]:
        taken = (self.queues, self.agents, self.campaigns, self.resync)
        self.queues, self.agents, self.campaigns, self.resync = set(), set(), set(), False
        self.wake.clear()
        return taken


class ChangeFeed:
    """The process's one LISTEN connection and the subscriptions it feeds, per tenant."""

    def __init__(self, dsn: str, *, history: int = HISTORY) -> None:
        self._dsn = dsn
        self._history: deque[Notice] = deque(maxlen=history)
        self._conn: asyncpg.Connection | None = None
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopped = False
        # Event ids: this process's start, then a counter (ordered, unique per process).
        self._epoch = int(time.time() * 1000)
        self._sequence = 0
        # Bumped by every notification (and reconnection): reads made at one generation
        # stay current until the next.
        self.generation = 0

    def next_id(self, complete: int | None) -> str:
        """An event id: this process's start, an ordered sequence, and the generation the
        stream is complete up to once the client has this event (what a resuming stream
        replays from); ``s`` while a snapshot is still under way (a resume then needs a
        snapshot again)."""
        self._sequence += 1
        return f"{self._epoch}-{self._sequence}-{'s' if complete is None else complete}"

    def changes_since(self, tenant: str, last_event_id: str) -> Notice | None:
        """The ids of ``tenant`` changed since the event ``last_event_id`` (as a notice of
        the generation resumed from), for a stream that resumes; None when a snapshot is
        needed instead: the id is not one of this process's, or was sent mid-snapshot, or
        is older than the notices remembered, or everything had to be re-read since (the
        LISTEN connection was lost)."""
        epoch, _, rest = last_event_id.partition("-")
        _, _, generation_text = rest.partition("-")
        # isdigit() alone also admits digits int() refuses, such as "²".
        if epoch != str(self._epoch) or not (
            generation_text.isascii() and generation_text.isdigit()
        ):
            return None
        since = int(generation_text)
        if since > self.generation:
            return None
        newer = [n for n in self._history if n.generation > since]
        if len(newer) != self.generation - since or any(n.tenant is None for n in newer):
            return None
        mine = [n for n in newer if n.tenant == tenant]
        return Notice(
            since,
            tenant,
            frozenset().union(*(n.queues for n in mine)),
            frozenset().union(*(n.agents for n in mine)),
            frozenset().union(*(n.campaigns for n in mine)),
        )

    async def start(self) -> None:
        self._stopped = False
        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(self._lost)
        self._conn = conn

    async def stop(self) -> None:
        self._stopped = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @contextlib.contextmanager
    def subscribe(self, tenant: str) -> Iterator[Subscription]:
        subscription = Subscription(tenant)
        self._subscriptions.setdefault(tenant, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(tenant, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscriptions.pop(tenant, None)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            change = json.loads(str(payload))
            tenant = change["tenant"]
        except (ValueError, KeyError, TypeError):
            log.error("stream.bad_notification", payload=str(payload)[:200])
            return
        self.generation += 1
        notice = Notice(
            self.generation,
            tenant,
            frozenset(change.get("queues") or ()),
            frozenset(change.get("agents") or ()),
            frozenset([change["campaign"]] if change.get("campaign") else ()),
        )
        self._history.append(notice)
        for subscription in self._subscriptions.get(tenant, ()):
            subscription.queues.update(change.get("queues") or ())
            subscription.agents.update(change.get("agents") or ())
            if change.get("campaign"):
                subscription.campaigns.add(change["campaign"])
            subscription.wake.set()

    def _lost(self, _conn: object) -> None:
        if self._stopped:
            return
        log.warning("stream.listen_connection_lost")
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._stopped:
            try:
                await self.start()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("stream.listen_reconnect_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
                continue
            # Changes may have been missed while disconnected: every stream re-reads all.
            self.generation += 1
            self._history.append(Notice(self.generation, None))
            for subscribers in self._subscriptions.values():
                for subscription in subscribers:
                    subscription.resync = True
                    subscription.wake.set()
            return


def _frame(event_id: str, kind: str, data: bytes) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: ".encode() + data + b"\n\n"


def _changed(
    queues: set[str], agents: set[str], campaigns: set[str]
) -> dict[Kind, set[str] | None]:
    """The rows to re-send for changed ids (None: every row of the kind). A queue's
    agents-by-state count changes with any agent's state, and the projector's notice of an
    agent names no queue: an agent's change re-sends the queues."""
    return {"queue": None if agents else queues, "agent": agents, "campaign": campaigns}


def stream_router(live: LiveViews, feed: ChangeFeed, heartbeat_s: float = 15.0) -> APIRouter:
    """``GET /api/v1/stream``."""
    router = APIRouter(tags=["supervision"])

    # Streams of the same tenant and scope woken by the same change read it once (the
    # live views are shared per tenant, scopes, kind and feed generation), and with the
    # supervision routes too.

    async def frames(
        principal: Principal,
        generation: int,
        changed: dict[Kind, set[str] | None],
        complete: int | None,
    ) -> list[bytes]:
        """Events for the changed rows the principal may see (None: every row of the kind),
        as of ``generation``. Only the last one's id says the stream is complete up to
        ``generation``; the others carry ``complete`` (where it stood before), so a client
        cut off in the middle resumes from there and misses nothing."""
        rows = [
            (kind, data)
            for kind, ids in changed.items()
            if ids is None or ids
            for object_id, data in (await live.view(principal, kind, generation)).rows.items()
            if ids is None or object_id in ids
        ]
        return [
            _frame(feed.next_id(generation if n == len(rows) - 1 else complete), kind, data)
            for n, (kind, data) in enumerate(rows)
        ]

    @router.get(
        "/stream",
        summary="Live supervision changes (Server-Sent Events)",
        description="A `text/event-stream`: first a snapshot (one `queue`, `agent` or "
        "`campaign` event per visible row), then an event per changed row within a second "
        "of the change, and a `: heartbeat` comment when idle. Event ids are ordered within "
        "one server process. A client reconnecting with `Last-Event-ID` gets only the rows "
        "changed since (after a `: resumed` comment) while the process remembers that far "
        "back, else a new snapshot (after a `: snapshot` comment).",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        principal: Caller,
        request: Request,
        last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    ) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            with feed.subscribe(principal.tenant) as subscription:
                yield b"retry: 2000\n\n"
                everything: dict[Kind, set[str] | None] = dict.fromkeys(KINDS)
                # Subscribed first: a change noticed from here on reaches the loop below.
                generation = feed.generation
                since = feed.changes_since(principal.tenant, last_event_id or "")
                if since is None:
                    yield b": snapshot\n\n"
                    first, complete = everything, None
                else:
                    yield b": resumed\n\n"
                    first = _changed(set(since.queues), set(since.agents), set(since.campaigns))
                    complete = since.generation
                for frame in await frames(principal, generation, first, complete):
                    yield frame
                complete = generation
                while not await request.is_disconnected():
                    try:
                        await asyncio.wait_for(subscription.wake.wait(), heartbeat_s)
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                    generation = feed.generation
                    queues, agents, campaigns, resync = subscription.take()
                    changed = everything if resync else _changed(queues, agents, campaigns)
                    for frame in await frames(principal, generation, changed, complete):
                        yield frame
                    complete = generation

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
