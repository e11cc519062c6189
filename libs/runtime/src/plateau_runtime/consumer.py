"""Idempotent event consumers: apply each event's effect exactly once despite redelivery.

The bus delivers at least once (DESIGN §3), so a consumer remembers, per stream, the last
``stream_version`` it applied, in its own ``consumer_checkpoints`` table and in the same
transaction as the effect. A redelivered or replayed event is then recognised and skipped.
Kafka offsets are committed only after that transaction: a crash in between redelivers
the event, and the checkpoint makes the second delivery a no-op.

A consumer with a batch handler (``EventConsumer(batch_handler=...)``) applies every
record of a poll in one transaction (``apply_batch_once``): one claim for all of them, one
effect, one commit, then the Kafka offsets. Throughput then comes from the batch, as it does
for the event store's group commit, and the guarantees stay those of one event at a time.

Each message also says where its event is recorded (the relay's ``event-store``,
``store-position`` and ``chain-hash`` headers): the consumer keeps, per source store, the
highest position it applied and that event's chain hash in ``consumer_store_marks``, in the
same transaction as the effect, so its read models can say up to which position and chain
head of each store they were computed (DESIGN §3). Messages without those headers (relayed
by an older build) are applied all the same and mark nothing.

The relay publishes each stream in order, so a version below the checkpoint is always a
duplicate. A version above ``checkpoint + 1`` means events were missed (say, the local
broker lost its memory); it is applied, and the gap is logged as a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from opentelemetry.trace import Link, SpanKind, get_current_span
from pydantic import ValidationError

from plateau_contracts.envelope import Envelope
from plateau_runtime.bus import ensure_topics
from plateau_runtime.db import Connection
from plateau_runtime.outbox import (
    TRANSIENT_ERRORS,
    Backoff,
    Outage,
    describe_error,
    wait_or_stop,
)
from plateau_runtime.tracing import context_from_traceparent, tracer

log = structlog.get_logger(__name__)

#: How long the broker may hold a fetch that found nothing new. The local Tansu broker
#: answers a waiting fetch only when this runs out, not when a record arrives (Kafka answers
#: at once), so it bounds the bus's added latency there: with aiokafka's 500 ms default an
#: event waited some 200 ms on its way to a consumer; with 50 ms, 9 ms (p50) and at most
#: 27. Shorter costs an idle consumer more CPU on a shared machine (measured per consumer:
#: 3 ms/s at 500, 15 at 50, 34 at 20).
FETCH_MAX_WAIT_MS = 50

Effect = Callable[[Connection], Awaitable[None]]
Handler = Callable[[Connection, Envelope], Awaitable[None]]
#: Runs once an event's effect and checkpoint are committed (not for skipped duplicates).
AfterCommit = Callable[[Envelope], Awaitable[None]]
#: Applies, in one transaction, the events of a batch not applied before (in delivery order).
BatchHandler = Callable[[Connection, Sequence[Envelope]], Awaitable[None]]
#: Runs once a batch's effect and checkpoints are committed, with the events it applied.
AfterBatchCommit = Callable[[Sequence[Envelope]], Awaitable[None]]

# One statement claims the event: it inserts or raises the checkpoint only if the stored
# version is lower. A concurrent claim of the same event waits on the row lock, then sees
# the committed version and claims nothing. ``previous`` (read before) is only for logging.
_CLAIM = """
with previous as (
    select version from consumer_checkpoints where consumer = $1 and stream = $2
)
insert into consumer_checkpoints as c (consumer, stream, version) values ($1, $2, $3)
on conflict (consumer, stream) do update set version = excluded.version
    where c.version < excluded.version
returning (select version from previous) as previous
"""

# The batch claim, first statement: a row per stream of the batch, locked until the end of
# the transaction, with the version applied so far (0 for a stream never seen). ``do update``
# rather than ``do nothing`` so that an existing row is locked and its latest committed
# version returned, even when a concurrent claim committed after this statement began.
# Streams come sorted, so two batches lock their rows in the same order (no deadlock).
_LOCK_CHECKPOINTS = """
insert into consumer_checkpoints as c (consumer, stream, version)
select $1, s, 0 from unnest($2::text[]) as s
on conflict (consumer, stream) do update set version = c.version
returning stream, version
"""

_RAISE_CHECKPOINTS = """
update consumer_checkpoints as c set version = u.version
from unnest($2::text[], $3::int[]) as u(stream, version)
where c.consumer = $1 and c.stream = u.stream
"""

# Raises each store's mark, never lowers it (a redelivered event is older than the mark).
_MARK_STORES = """
insert into consumer_store_marks as m (consumer, store, position, chain_hash, applied_at)
select $1, u.store, u.position, u.chain_hash, now()
from unnest($2::text[], $3::bigint[], $4::text[]) as u(store, position, chain_hash)
on conflict (consumer, store) do update set
    position = excluded.position, chain_hash = excluded.chain_hash,
    applied_at = excluded.applied_at
where m.position < excluded.position
"""

_REJECT = """
insert into consumer_rejects
    (consumer, topic, partition, message_offset, message_key, message_value, headers, error)
values ($1, $2, $3, $4, $5, $6, $7, $8)
on conflict do nothing
"""


@dataclass(frozen=True)
class StoreMark:
    """Where an event is recorded: its store (schema), position and chain hash (hex)."""

    store: str
    position: int
    chain_hash: str


def store_mark(headers: Iterable[tuple[str, bytes]] | None) -> StoreMark | None:
    """The store mark of a message's headers, or None when they do not carry one."""
    found = {name: value for name, value in headers or ()}
    try:
        return StoreMark(
            found["event-store"].decode(),
            int(found["store-position"]),
            found["chain-hash"].decode(),
        )
    except (KeyError, ValueError):
        return None


async def record_marks(conn: Connection, consumer: str, marks: Iterable[StoreMark]) -> None:
    """Raise ``consumer``'s mark of each store to the highest of ``marks`` (on ``conn``)."""
    highest: dict[str, StoreMark] = {}
    for mark in marks:
        if mark.store not in highest or highest[mark.store].position < mark.position:
            highest[mark.store] = mark
    if not highest:
        return
    # Sorted, so that concurrent consumers lock the rows in the same order.
    chosen = [highest[store] for store in sorted(highest)]
    await conn.execute(
        _MARK_STORES,
        consumer,
        [m.store for m in chosen],
        [m.position for m in chosen],
        [m.chain_hash for m in chosen],
    )


async def apply_once(
    conn: Connection,
    consumer: str,
    envelope: Envelope,
    effect: Effect,
    mark: StoreMark | None = None,
) -> bool:
    """Run ``effect`` and record the event as applied, in one transaction; do nothing and
    return False when this stream version, or a later one, was already applied. With
    ``mark``, the consumer's mark of the event's store is raised to it in that transaction."""
    async with conn.transaction():
        claimed = await conn.fetchrow(_CLAIM, consumer, envelope.stream, envelope.stream_version)
        if claimed is None:
            return False
        await effect(conn)
        if mark is not None:
            await record_marks(conn, consumer, [mark])
    previous = claimed["previous"] or 0
    if envelope.stream_version > previous + 1:
        log.warning(
            "consumer.version_gap",
            consumer=consumer,
            stream=envelope.stream,
            expected_version=previous + 1,
            applied_version=envelope.stream_version,
            event_id=str(envelope.event_id),
        )
    return True


async def apply_batch_once(
    conn: Connection,
    consumer: str,
    envelopes: Sequence[Envelope],
    effect: Callable[[Connection, list[Envelope]], Awaitable[None]],
    marks: Sequence[StoreMark] = (),
) -> list[Envelope]:
    """Run ``effect`` with the events of ``envelopes`` not applied yet (in their order) and
    record them all as applied, in one transaction; returns those events. ``marks`` (the
    store marks of the batch's messages) raise the consumer's marks in that transaction.

    As ``apply_once`` for each event in turn: an event whose stream version, or a later
    one, was applied before (by an earlier batch or earlier in this one) is left out. A
    concurrent claim of the same streams waits for this transaction, then sees its versions.
    """
    if not envelopes:
        return []
    streams = sorted({e.stream for e in envelopes})
    async with conn.transaction():
        rows = await conn.fetch(_LOCK_CHECKPOINTS, consumer, streams)
        applied: dict[str, int] = {row["stream"]: row["version"] for row in rows}
        before = dict(applied)
        claimed: list[Envelope] = []
        for envelope in envelopes:
            previous = applied[envelope.stream]
            if envelope.stream_version <= previous:
                continue
            if envelope.stream_version > previous + 1:
                log.warning(
                    "consumer.version_gap",
                    consumer=consumer,
                    stream=envelope.stream,
                    expected_version=previous + 1,
                    applied_version=envelope.stream_version,
                    event_id=str(envelope.event_id),
                )
            applied[envelope.stream] = envelope.stream_version
            claimed.append(envelope)
        if not claimed:
            return []
        raised = [s for s in streams if applied[s] != before[s]]
        await conn.execute(_RAISE_CHECKPOINTS, consumer, raised, [applied[s] for s in raised])
        await effect(conn, claimed)
        # Last, so that the marks' row locks are held only for the commit.
        await record_marks(conn, consumer, marks)
    return claimed


def rejection_reason(exc: BaseException) -> str:
    """Why a message is not an envelope, in one line."""
    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(message)'}: {err['msg']}"
            for err in exc.errors()[:5]
        ]
        more = exc.error_count() - len(problems)
        return "not an event envelope: " + "; ".join(problems) + (f" (+{more})" if more else "")
    return describe_error(exc)


class EventConsumer:
    """Consumes topics as Kafka group ``consumer`` and applies each event once.

    The handler runs inside ``apply_once``'s transaction, on its connection: whatever it
    writes there commits together with the checkpoint. ``after_commit``, if given, runs
    once that transaction has committed (say, to act on what the handler recorded). A
    handler that raises is retried
    with back-off on the same event (later events of that partition wait: order matters
    more than progress); the error is logged each time with its traceback.

    With ``batch_handler`` instead of ``handler``, the records of each poll (up to
    ``max_batch``, partition after partition, each partition in order) are applied in one
    ``apply_batch_once`` transaction and ``after_batch_commit`` runs once it committed; a
    batch that fails is retried whole, with back-off.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        bootstrap: str,
        *,
        consumer: str,
        topics: Sequence[str],
        handler: Handler | None = None,
        after_commit: AfterCommit | None = None,
        batch_handler: BatchHandler | None = None,
        after_batch_commit: AfterBatchCommit | None = None,
        max_batch: int = 500,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give EventConsumer either handler or batch_handler")
        self._pool = pool
        self._bootstrap = bootstrap
        self._consumer = consumer
        self._topics = list(topics)
        self._handler = handler
        self._after_commit = after_commit
        self._batch_handler = batch_handler
        self._after_batch_commit = after_batch_commit
        self._max_batch = max_batch
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._tracer = tracer(__name__)

    @property
    def consumer(self) -> str:
        return self._consumer

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, from the earliest offset the group has not
        committed; broker and database outages are waited out with back-off."""
        backoff = Backoff()
        outage = Outage(log, "consumer.dependency")
        context = {"consumer": self._consumer}
        while not stop.is_set():
            kafka: AIOKafkaConsumer | None = None
            try:
                await ensure_topics(self._bootstrap, self._topics)
                kafka = AIOKafkaConsumer(
                    *self._topics,
                    bootstrap_servers=self._bootstrap,
                    group_id=self._consumer,
                    client_id=f"plateau-consumer-{self._consumer}",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=self._fetch_max_wait_ms,
                    # Notice soon when a restarted local broker recreated a topic.
                    metadata_max_age_ms=10_000,
                )
                await kafka.start()
                if outage.ongoing:
                    outage.recovered(**context)
                backoff.reset()
                await self._consume(kafka, stop, backoff, outage)
            except TRANSIENT_ERRORS as exc:
                outage.failed(exc, **context)
                await wait_or_stop(stop, backoff.next_delay())
            finally:
                if kafka is not None:
                    await _stop_quietly(kafka)

    async def _consume(
        self, kafka: AIOKafkaConsumer, stop: asyncio.Event, backoff: Backoff, outage: Outage
    ) -> None:
        context = {"consumer": self._consumer}
        handler_backoff = Backoff(initial=0.5, maximum=30.0)
        while not stop.is_set():
            fetched = await kafka.getmany(timeout_ms=200, max_records=self._max_batch)
            if self._batch_handler is not None:
                done, failure = await self._apply_batch(kafka, fetched)
            else:
                done, failure = await self._apply_each(kafka, fetched)
            if done:
                # Only offsets whose effects are committed; a crash before this line
                # redelivers them and ``apply_once`` skips them.
                await kafka.commit(done)
            if failure is None:
                if fetched and outage.ongoing:
                    outage.recovered(**context)
                if fetched:
                    backoff.reset()
                    handler_backoff.reset()
                continue
            error, record = failure
            where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
            if isinstance(error, TRANSIENT_ERRORS):
                outage.failed(error, **where, **context)
                await wait_or_stop(stop, backoff.next_delay())
            else:
                log.error("consumer.handler_failed", **where, **context, exc_info=error)
                await wait_or_stop(stop, handler_backoff.next_delay())

    async def _apply_each(
        self, kafka: AIOKafkaConsumer, fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> tuple[dict[TopicPartition, int], tuple[BaseException, ConsumerRecord[Any, Any]] | None]:
        """Apply records one by one; the offsets to commit, and the failure that stopped."""
        done: dict[TopicPartition, int] = {}
        failure: tuple[BaseException, ConsumerRecord[Any, Any]] | None = None
        for tp, records in fetched.items():
            if failure is not None:
                _rewind(kafka, tp, records[0].offset)
                continue
            for record in records:
                try:
                    await self._process(record)
                except Exception as exc:
                    failure = (exc, record)
                    _rewind(kafka, tp, record.offset)
                    break
                done[tp] = record.offset + 1
        return done, failure

    async def _apply_batch(
        self, kafka: AIOKafkaConsumer, fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> tuple[dict[TopicPartition, int], tuple[BaseException, ConsumerRecord[Any, Any]] | None]:
        """Apply a poll's records in one transaction; all their offsets, or the failure
        (then every partition is fetched again from the batch's first record)."""
        if not fetched:
            return {}, None
        try:
            await self._process_batch(fetched)
        except Exception as exc:
            for tp, records in fetched.items():
                _rewind(kafka, tp, records[0].offset)
            return {}, (exc, next(iter(fetched.values()))[0])
        return {tp: records[-1].offset + 1 for tp, records in fetched.items()}, None

    async def _process(self, record: ConsumerRecord[Any, Any]) -> None:
        assert self._handler is not None
        handler = self._handler
        try:
            if record.value is None:
                raise ValueError("the message has no value (a tombstone?)")
            envelope = Envelope.from_message(record.value)
        except (ValidationError, ValueError) as exc:
            await self._reject(record, exc)
            return
        with self._tracer.start_as_current_span(
            f"{envelope.type} process",
            context=context_from_traceparent(envelope.traceparent),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self._consumer,
                "plateau.stream": envelope.stream,
                "plateau.stream_version": envelope.stream_version,
            },
        ):

            async def effect(conn: Connection) -> None:
                await handler(conn, envelope)

            mark = store_mark(record.headers)
            async with self._pool.acquire() as conn:
                applied = await apply_once(conn, self._consumer, envelope, effect, mark)
            if applied and self._after_commit is not None:
                await self._after_commit(envelope)

    async def _process_batch(
        self, fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        assert self._batch_handler is not None
        handler = self._batch_handler
        envelopes: list[Envelope] = []
        marks: list[StoreMark] = []
        for records in fetched.values():
            for record in records:
                try:
                    if record.value is None:
                        raise ValueError("the message has no value (a tombstone?)")
                    envelopes.append(Envelope.from_message(record.value))
                except (ValidationError, ValueError) as exc:
                    await self._reject(record, exc)
                    continue
                mark = store_mark(record.headers)
                if mark is not None:
                    marks.append(mark)
        if not envelopes:
            return
        links = [
            Link(get_current_span(context_from_traceparent(e.traceparent)).get_span_context())
            for e in envelopes
            if e.traceparent
        ]
        with self._tracer.start_as_current_span(
            "batch process",
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "kafka",
                "messaging.consumer.group.name": self._consumer,
                "messaging.batch.message_count": len(envelopes),
            },
        ):
            async with self._pool.acquire() as conn:
                applied = await apply_batch_once(conn, self._consumer, envelopes, handler, marks)
            if applied and self._after_batch_commit is not None:
                await self._after_batch_commit(applied)

    async def _reject(self, record: ConsumerRecord[Any, Any], exc: BaseException) -> None:
        reason = rejection_reason(exc)
        headers = [[k, v.decode(errors="replace")] for k, v in (record.headers or ())]
        await self._pool.execute(
            _REJECT,
            self._consumer,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            headers,
            reason,
        )
        log.warning(
            "consumer.message_rejected",
            consumer=self._consumer,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=reason,
        )


def _rewind(kafka: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    # Fetch this record again after the back-off. After a rebalance the partition may
    # belong to another member, which starts from the committed offset anyway.
    with contextlib.suppress(IllegalStateError):
        kafka.seek(tp, offset)


async def _stop_quietly(kafka: AIOKafkaConsumer) -> None:
    try:
        await asyncio.wait_for(kafka.stop(), 10)
    except Exception as exc:
        log.debug("consumer.stop_failed", error=describe_error(exc))
