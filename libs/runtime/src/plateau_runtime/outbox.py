"""The transactional outbox relay: publishes a service's stored events to the bus.

The event store is the outbox. The relay reads it in ``position`` order (gap-free commit
order, see ``eventstore``), publishes each event to the topic of its type with the stream
id as key, waits for the broker's acknowledgement, and only then records how far it got in
``relay_positions``. A crash between the two repeats some events, never loses one:
delivery is at least once, and consumers deduplicate (``plateau_runtime.consumer``).

Per-stream order is kept by having exactly one batch in flight per topic partition: a
pass groups its events by partition into atomic record batches and waits for all of them
before the next pass starts. A batch that fails is republished whole, from the stored
position, so a stream's redelivery always restarts at or before its first undelivered
version.

An event whose type the catalogue does not know cannot be routed. The relay publishes
everything before it, then stops with ``UnpublishableEventError`` rather than guess a
topic (a wrong topic would hide the event from its consumers for good). Nothing is lost:
a build that knows the type resumes from the stored position.

Only one relay per store and name publishes at a time: it holds a PostgreSQL session
advisory lock (the lease) on a dedicated connection and records its position through that
connection, so a relay that lost its lease fails its next write instead of racing. A second
replica waits on standby and takes over from the recorded position.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from plateau_contracts.catalogue import UnknownEventError, all_events, lookup
from plateau_contracts.envelope import Envelope
from plateau_contracts.topics import partition_key
from plateau_runtime.bus import ensure_topics
from plateau_runtime.errors import DependencyUnavailableError, PlateauError
from plateau_runtime.eventstore import EventStore, StoredEvent

log = structlog.get_logger(__name__)

#: Failures that mean "a dependency is unreachable right now": back off and retry.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    OSError,
    TimeoutError,
    DependencyUnavailableError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

#: Largest record batch per partition and pass. Big enough that a pass of
#: ``batch_size`` events usually fits one batch per partition; larger passes are split
#: and the parts sent one after the other.
_MAX_BATCH_BYTES = 1 << 20
_MAX_REQUEST_BYTES = 8 << 20
#: How often a standby relay retries for the lease.
_STANDBY_RETRY_SECONDS = 2.0


def _lease_key(schema: str, name: str) -> int:
    digest = hashlib.sha256(f"plateau.relay.{schema}.{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class UnpublishableEventError(PlateauError):
    """A stored event cannot be published because this build cannot route its type."""


@dataclass
class Backoff:
    """Exponential back-off between retries of an unavailable dependency."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class Outage:
    """Logs a dependency outage once when it starts, as a reminder while it lasts, and once
    when it ends, so a broker restart reads as three lines instead of a wall of tracebacks.
    """

    def __init__(
        self,
        logger: Any,
        what: str,
        *,
        remind_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._remind_every = remind_every
        self._clock = clock
        self._since: float | None = None
        self._last_report = 0.0
        self.attempts = 0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, **context: Any) -> None:
        """Record a failed attempt; logs only the first one and periodic reminders."""
        now = self._clock()
        self.attempts += 1
        error = describe_error(exc)
        if self._since is None:
            self._since = self._last_report = now
            self._log.warning(f"{self._what}.unavailable", error=error, **context)
        elif now - self._last_report >= self._remind_every:
            self._last_report = now
            self._log.warning(
                f"{self._what}.still_unavailable",
                error=error,
                down_for_s=round(now - self._since, 1),
                attempts=self.attempts,
                **context,
            )

    def recovered(self, **context: Any) -> None:
        """Record a successful attempt; logs the end of an outage if there was one."""
        if self._since is None:
            return
        self._log.info(
            f"{self._what}.recovered",
            down_for_s=round(self._clock() - self._since, 1),
            attempts=self.attempts,
            **context,
        )
        self._since = None
        self.attempts = 0


def describe_error(exc: BaseException) -> str:
    """A one-line description of an error for a structured log field."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, returning early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def message_headers(
    envelope: Envelope, stored: StoredEvent | None = None, store: str | None = None
) -> list[tuple[str, bytes]]:
    """Kafka headers of an event: its trace context, type and id; with ``stored`` and
    ``store``, also where it is recorded (see ``plateau_runtime.consumer.StoreMark``).

    ``event-store`` (the store's schema), ``store-position`` (decimal) and ``chain-hash``
    (hex) are not part of the envelope: they are assigned by the store, outside the hashed
    content, so a consumer can say up to which position and chain head its effects go.
    """
    headers = [
        ("event-type", envelope.type.encode()),
        ("event-id", str(envelope.event_id).encode()),
    ]
    if envelope.traceparent:
        headers.insert(0, ("traceparent", envelope.traceparent.encode()))
    if stored is not None and store is not None:
        headers += [
            ("event-store", store.encode()),
            ("store-position", str(stored.position).encode()),
            ("chain-hash", stored.hash.hex().encode()),
        ]
    return headers


class TopicRouter:
    """Maps an event type to its topic through the contracts catalogue."""

    def __init__(self) -> None:
        self._by_type: dict[str, str] = {}

    def topic_of(self, envelope: Envelope) -> str | None:
        """The topic of an event, or None when this build does not know its type."""
        known = self._by_type.get(envelope.type)
        if known is not None:
            return known
        try:
            topic = getattr(lookup(envelope.type, envelope.schema_version), "topic", None)
        except UnknownEventError:
            # An old schema version may survive only as an upcaster: every version of a
            # type is published by the same context, hence to the same topic.
            topic = next(
                (getattr(c, "topic", None) for c in all_events() if c.event_type == envelope.type),
                None,
            )
        if topic is not None:
            self._by_type[envelope.type] = str(topic)
        return None if topic is None else str(topic)


class OutboxRelay:
    """Publishes a store's events to Kafka in order per stream, at least once.

    It uses aiokafka directly rather than FastStream's publisher: it needs to build one
    record batch per partition and wait for every acknowledgement before recording its
    position. FastStream publishes message by message (one round trip each, or a batch
    forced onto one partition), which gives neither the throughput nor that control.
    """

    def __init__(
        self,
        store: EventStore,
        pool: asyncpg.Pool,
        bootstrap: str,
        *,
        name: str = "kafka",
        batch_size: int = 500,
        idle_poll: float = 0.05,
    ) -> None:
        self._store = store
        self._pool = pool
        self._bootstrap = bootstrap
        self._name = name
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._table = f"{store.schema}.relay_positions"
        self._position: int | None = None
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._router = TopicRouter()
        self._partitioner = DefaultPartitioner()
        self._lease: Any = None  # the pool connection that holds the advisory lock
        self._lease_key = _lease_key(store.schema, name)

    @property
    def position(self) -> int:
        """The position of the last event published and recorded (0 before the first)."""
        return self._position or 0

    @property
    def name(self) -> str:
        return self._name

    async def publish_pending(self) -> int:
        """Publish everything after the stored position, record the new position, and
        return how many events were published."""
        published = 0
        try:
            if not await self._take_lease():
                raise PlateauError(
                    f"another outbox relay {self._store.schema}/{self._name} is running",
                    "let it publish, or stop it before publishing by hand",
                )
            while True:
                count = await self._publish_batch()
                published += count
                if count < self._batch_size:
                    return published
        except (UnpublishableEventError, PlateauError):
            raise
        except TRANSIENT_ERRORS as exc:
            await self._drop_producer()
            await self._drop_lease()
            raise DependencyUnavailableError(
                f"outbox relay {self._store.schema}/{self._name} could not publish past "
                f"position {self.position}: {describe_error(exc)}",
                f"check that the broker at {self._bootstrap} and PostgreSQL are up; "
                "the relay resumes from the recorded position",
            ) from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Publish continuously until ``stop`` is set, riding out broker and database
        outages; raises ``UnpublishableEventError`` if it meets an event it cannot route."""
        backoff = Backoff()
        outage = Outage(log, "relay.dependency")
        context = {"relay": self._name, "schema": self._store.schema}
        standby_logged = False
        try:
            while not stop.is_set():
                try:
                    if self._lease is None:
                        if not await self._take_lease():
                            if not standby_logged:
                                log.info("relay.standby", **context)
                                standby_logged = True
                            await wait_or_stop(stop, _STANDBY_RETRY_SECONDS)
                            continue
                        log.info("relay.leading", **context)
                        standby_logged = False
                    count = await self._publish_batch()
                except UnpublishableEventError as exc:
                    log.error("relay.blocked", error=exc.problem, hint=exc.hint, **context)
                    raise
                except TRANSIENT_ERRORS as exc:
                    outage.failed(exc, position=self.position, **context)
                    await self._drop_producer()
                    await self._drop_lease()
                    await wait_or_stop(stop, backoff.next_delay())
                    continue
                if outage.ongoing:
                    outage.recovered(position=self.position, **context)
                backoff.reset()
                if count < self._batch_size:
                    await wait_or_stop(stop, self._idle_poll)
        finally:
            await self.close()

    async def close(self) -> None:
        """Release the broker connection and the lease (the position is already recorded)."""
        await self._drop_producer()
        await self._drop_lease()

    async def _take_lease(self) -> bool:
        """Try once to become the publishing relay; on success the position is reloaded,
        since a previous leader may have advanced it."""
        if self._lease is not None:
            return True
        conn = await self._pool.acquire()
        try:
            got = await conn.fetchval("select pg_try_advisory_lock($1)", self._lease_key)
        except BaseException:
            await self._pool.release(conn)
            raise
        if not got:
            await self._pool.release(conn)
            return False
        self._lease = conn
        self._position = None
        return True

    async def _drop_lease(self) -> None:
        conn, self._lease = self._lease, None
        if conn is None:
            return
        try:
            await conn.execute("select pg_advisory_unlock($1)", self._lease_key)
            await self._pool.release(conn)
        except Exception:
            # A broken connection lost its session, and the lock with it.
            conn.terminate()
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def __aenter__(self) -> OutboxRelay:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _publish_batch(self) -> int:
        if self._position is None:
            self._position = await self._load_position()
        events = await self._store.read_all(self._position, self._batch_size)
        routable: list[tuple[StoredEvent, str]] = []
        blocked: StoredEvent | None = None
        for stored in events:
            topic = self._router.topic_of(stored.envelope)
            if topic is None:
                blocked = stored
                break
            routable.append((stored, topic))
        if routable:
            await self._publish(routable)
            last = routable[-1][0].position
            # Through the lease's connection: if the lease is gone, so is this write.
            await (self._lease or self._pool).execute(
                f"insert into {self._table} (relay, position) values ($1, $2) "
                "on conflict (relay) do update set position = "
                f"greatest({self._table}.position, excluded.position), updated_at = now()",
                self._name,
                last,
            )
            self._position = last
        if blocked is not None:
            env = blocked.envelope
            raise UnpublishableEventError(
                f"event at position {blocked.position} ({env.type!r} v{env.schema_version}, "
                f"stream {env.stream!r}) has no topic: this build's event catalogue does not "
                "know its type",
                "deploy a build whose plateau_contracts registers the type; the relay "
                f"resumes from position {self.position} and loses nothing",
            )
        return len(routable)

    async def _load_position(self) -> int:
        value = await (self._lease or self._pool).fetchval(
            f"select position from {self._table} where relay = $1", self._name
        )
        return int(value or 0)

    async def _publish(self, events: Sequence[tuple[StoredEvent, str]]) -> None:
        producer = await self._ensure_producer()
        batches: dict[tuple[str, int], list[Any]] = {}
        for stored, topic in events:
            envelope = stored.envelope
            key = partition_key(envelope.stream)
            partitions = await self._partitions_of(producer, topic)
            partition = self._partitioner(key, partitions, partitions)
            chain = batches.setdefault((topic, partition), [producer.create_batch()])
            record = {
                "key": key,
                "value": envelope.to_message(),
                "timestamp": int(envelope.recorded_at.timestamp() * 1000),
                "headers": message_headers(envelope, stored, self._store.schema),
            }
            if chain[-1].append(**record) is None:
                # Full: start the partition's next batch (an empty batch takes any record).
                chain.append(producer.create_batch())
                chain[-1].append(**record)
        results = await asyncio.gather(
            *(self._send_in_order(producer, tp, chain) for tp, chain in batches.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @staticmethod
    async def _send_in_order(
        producer: AIOKafkaProducer, tp: tuple[str, int], chain: Sequence[Any]
    ) -> None:
        # One batch in flight per partition: the next is sent only once the broker has
        # acknowledged the previous one, so a failure can never let a later version of a
        # stream overtake an earlier one. Each batch is stored or refused as a whole.
        topic, partition = tp
        for batch in chain:
            delivered = await producer.send_batch(batch, topic, partition=partition)
            await delivered

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        partitions = self._partitions.get(topic)
        if partitions is None:
            await ensure_topics(self._bootstrap, [topic])
            partitions = sorted(await producer.partitions_for(topic))
            self._partitions[topic] = partitions
        return partitions

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        # The local broker has no idempotent producer and no transactions; acks="all" and
        # one batch in flight per partition give at-least-once delivery in stream order.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=f"plateau-relay-{self._store.schema}-{self._name}",
            acks="all",
            enable_idempotence=False,
            linger_ms=0,
            max_batch_size=_MAX_BATCH_BYTES,
            max_request_size=_MAX_REQUEST_BYTES,
            request_timeout_ms=15_000,
            retry_backoff_ms=100,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        # A broker that comes back may have lost its topics (the local one keeps them in
        # memory): check them again on reconnection.
        self._partitions.clear()
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
