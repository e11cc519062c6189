"""Idempotent event consumers: apply each event's effect exactly once despite redelivery.

The bus delivers at least once (DESIGN §3), so a consumer remembers, per stream, the last
``stream_version`` it applied, in its own ``consumer_checkpoints`` table and in the same
transaction as the effect. A redelivered or replayed event is then recognised and skipped.
Kafka offsets are committed only after that transaction: a crash in between redelivers
the event, and the checkpoint makes the second delivery a no-op.

The relay publishes each stream in order, so a version below the checkpoint is always a
duplicate. A version above ``checkpoint + 1`` means events were missed (say, the local
broker lost its memory); it is applied, and the gap is logged as a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from opentelemetry.trace import SpanKind
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

Effect = Callable[[Connection], Awaitable[None]]
Handler = Callable[[Connection, Envelope], Awaitable[None]]
#: Runs once an event's effect and checkpoint are committed (not for skipped duplicates).
AfterCommit = Callable[[Envelope], Awaitable[None]]

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

_REJECT = """
insert into consumer_rejects
    (consumer, topic, partition, message_offset, message_key, message_value, headers, error)
values ($1, $2, $3, $4, $5, $6, $7, $8)
on conflict do nothing
"""


async def apply_once(conn: Connection, consumer: str, envelope: Envelope, effect: Effect) -> bool:
    """Run ``effect`` and record the event as applied, in one transaction; do nothing and
    return False when this stream version, or a later one, was already applied."""
    async with conn.transaction():
        claimed = await conn.fetchrow(_CLAIM, consumer, envelope.stream, envelope.stream_version)
        if claimed is None:
            return False
        await effect(conn)
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
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        bootstrap: str,
        *,
        consumer: str,
        topics: Sequence[str],
        handler: Handler,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap
        self._consumer = consumer
        self._topics = list(topics)
        self._handler = handler
        self._after_commit = after_commit
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
            fetched = await kafka.getmany(timeout_ms=200, max_records=500)
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

    async def _process(self, record: ConsumerRecord[Any, Any]) -> None:
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
                await self._handler(conn, envelope)

            async with self._pool.acquire() as conn:
                applied = await apply_once(conn, self._consumer, envelope, effect)
            if applied and self._after_commit is not None:
                await self._after_commit(envelope)

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
