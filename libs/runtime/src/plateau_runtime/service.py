"""The service host: the one way a Plateau service process starts, runs and stops.

A service's ``bootstrap.py`` builds a ``ServiceHost`` from its ``ServiceSpec`` and a wiring
function that turns the host's resources (settings, pool, event store) into gRPC servicers
and background tasks. The host does the rest, in this order:

* settings from ``PLATEAU_*`` variables, then logging and tracing;
* the PostgreSQL pool of the service role, and a check that its schema is migrated;
* the event store, the outbox relay and the gRPC server (health, reflection, servicers);
* the service's own background tasks; health turns SERVING.

On SIGTERM or SIGINT it stops in the reverse order: health NOT_SERVING, gRPC refuses new
calls and drains, tasks stop, the relay stops, the pool closes; all within about ten
seconds, then the process exits 0. A ``PlateauError`` (bad setting, unreachable
dependency, unmigrated schema) ends it with one line on stderr and status 2; a crashed
background task is logged with its traceback and ends it with status 1, so a supervisor
restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import structlog

from plateau_runtime.db import create_pool
from plateau_runtime.errors import DependencyUnavailableError, PlateauError
from plateau_runtime.eventstore import EventStore
from plateau_runtime.grpc_server import GrpcServer, GrpcService
from plateau_runtime.logging import configure_logging
from plateau_runtime.migrations import RUNTIME_MIGRATIONS, MigrationError, discover
from plateau_runtime.outbox import OutboxRelay
from plateau_runtime.services import ServiceSpec
from plateau_runtime.settings import ServiceSettings, load_settings
from plateau_runtime.tracing import configure_tracing

log = structlog.get_logger("plateau.service")

#: A long-running job of a service: runs until ``stop`` is set, then returns promptly.
BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]

EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_PLATEAU_ERROR = 2

_RELAY_TASK = "outbox-relay"
_CONNECT_TIMEOUT = 10.0
_MIGRATE_HINT = "run `plateau migrate` (plateau up runs it before starting the services)"


@dataclass(frozen=True)
class ServiceResources:
    """What the host has built when it asks a service to wire its components."""

    spec: ServiceSpec
    settings: ServiceSettings
    pool: asyncpg.Pool
    store: EventStore


@dataclass(frozen=True)
class Components:
    """A service's own parts: the gRPC services it serves and its background tasks."""

    grpc_services: Sequence[GrpcService] = ()
    tasks: Mapping[str, BackgroundTask] = field(default_factory=dict)


Wiring = Callable[[ServiceResources], Components]


def no_components(_: ServiceResources) -> Components:
    """The wiring of a service that serves only health and reflection (so far)."""
    return Components()


@dataclass(frozen=True)
class ShutdownBudget:
    """Seconds each shutdown step may take; the sum stays under the supervisor's ten."""

    grpc_grace: float = 2.0
    tasks: float = 2.0
    relay: float = 3.0
    pool: float = 2.0


async def check_migrated(pool: asyncpg.Pool, spec: ServiceSpec) -> None:
    """``MigrationError`` unless every migration this build knows is applied to the schema."""
    schema = spec.schema
    expected = discover(RUNTIME_MIGRATIONS, "runtime")
    migrations_dir = spec.migrations_dir()
    if migrations_dir is not None:
        expected += discover(migrations_dir, schema)
    try:
        table = await pool.fetchval("select to_regclass($1)", f"{schema}.schema_migrations")
        if table is None:
            raise MigrationError(f"schema {schema!r} is not migrated", _MIGRATE_HINT)
        rows = await pool.fetch(f"select source, version from {schema}.schema_migrations")
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"the migrations of schema {schema!r} cannot be read: {exc}", _MIGRATE_HINT
        ) from None
    applied = {(row["source"], row["version"]) for row in rows}
    missing = [m for m in expected if (m.source, m.version) not in applied]
    if missing:
        names = ", ".join(f"{m.source}/{m.version:04d}_{m.name}" for m in missing)
        raise MigrationError(f"schema {schema!r} lacks migrations {names}", _MIGRATE_HINT)


#: Allocations (net of deallocations) between two collections of the youngest generation;
#: CPython's default is 700. See ``tune_garbage_collector``.
GC_YOUNG_THRESHOLD = 7_000


def tune_garbage_collector() -> None:
    """Fewer, cheaper pauses of the cyclic garbage collector in a running service.

    A full collection stops the event loop for as long as it takes to scan every tracked
    object. Measured in the sip-gateway at 150 calls/s (bench/sip_inbound.py): with the
    defaults one came every ~2 s and stopped the loop for 100-360 ms, growing with the
    heap, which was the whole tail of the post-dial delay (p99 158 ms at 150 calls/s,
    392 ms at 200). What starting allocated (modules, schemas, the wiring: ~70,000
    objects) is frozen out of every scan, and the youngest generation is collected 10
    times less often, so full collections come 10 times less often (p99 12-22 ms at
    150-200 calls/s). A full collection still scans what the service holds alive (for
    the gateway, transactions kept 32 s by RFC 3261's timers), so it still pauses
    (~450 ms at 150 calls/s, every ~20 s): holding fewer objects is the remaining cure.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class BackgroundTaskError(Exception):
    """A background task crashed or returned while the service was meant to run."""


@dataclass
class _Running:
    """What has been started so far, so a failed start cleans up exactly that."""

    pool: asyncpg.Pool | None = None
    server: GrpcServer | None = None
    relay: asyncio.Task[None] | None = None
    relay_stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    tasks_stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: Tasks whose end is already logged, so stopping does not log it twice.
    reported: set[asyncio.Task[None]] = field(default_factory=set)

    def supervised(self) -> dict[asyncio.Task[None], str]:
        named = {task: name for name, task in self.tasks.items()}
        if self.relay is not None:
            named[self.relay] = _RELAY_TASK
        return named


class ServiceHost:
    """Runs one service process: see the module docstring for the lifecycle."""

    def __init__(
        self,
        spec: ServiceSpec,
        wire: Wiring = no_components,
        *,
        settings_type: type[ServiceSettings] = ServiceSettings,
        relay: bool = True,
        budget: ShutdownBudget | None = None,
    ) -> None:
        """``relay=False`` for a service that records no events (a projector)."""
        self.spec = spec
        self._wire = wire
        self._settings_type = settings_type
        self._with_relay = relay
        self._budget = budget or ShutdownBudget()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT and return the process's exit status."""
        try:
            return asyncio.run(self._run_until_signalled())
        except PlateauError as exc:
            print(f"plateau-{self.spec.name}: error: {exc}", file=sys.stderr, flush=True)
            return EXIT_PLATEAU_ERROR
        except BackgroundTaskError:
            return EXIT_CRASHED

    async def _run_until_signalled(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            log.info("service.stopping", signal=signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.serve(stop, freeze_heap=True)
        except (PlateauError, BackgroundTaskError):
            raise
        except Exception:
            log.exception("service.crashed")
            return EXIT_CRASHED
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        return EXIT_OK

    async def serve(self, stop: asyncio.Event, *, freeze_heap: bool = False) -> None:
        """Start everything, run until ``stop`` is set, stop everything.

        Raises the ``PlateauError`` that prevented the start or ended a task, or
        ``BackgroundTaskError`` when a background task crashed or returned early.
        ``freeze_heap`` (the process's own run): ``tune_garbage_collector`` once started.
        """
        settings = load_settings(self._settings_type)
        configure_logging(self.spec.name, settings.log_format, settings.log_level)
        configure_tracing(self.spec.name, settings.otlp_endpoint)
        running = _Running()
        stopped = asyncio.create_task(stop.wait())
        try:
            starting = asyncio.create_task(self._start(settings, running))
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                # Asked to stop while still starting (e.g. waiting for the database).
                starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            if not stop.is_set():
                if freeze_heap:
                    tune_garbage_collector()
                await self._supervise(running, stopped)
        finally:
            stopped.cancel()
            await self._stop(running)
        log.info("service.stopped")

    async def _start(self, settings: ServiceSettings, running: _Running) -> None:
        port = settings.grpc_port or self.spec.grpc_port
        log.info("service.starting", grpc_host=settings.grpc_host, grpc_port=port)
        running.pool = await _connect(settings.database_url)
        await check_migrated(running.pool, self.spec)
        store = EventStore(running.pool, self.spec.schema)
        components = self._wire(ServiceResources(self.spec, settings, running.pool, store))
        running.server = GrpcServer(settings.grpc_host, port, components.grpc_services)
        await running.server.start()
        if self._with_relay:
            relay = OutboxRelay(
                store,
                running.pool,
                settings.kafka_bootstrap,
                batch_size=settings.relay_batch_size,
                idle_poll=settings.relay_idle_poll_seconds,
            )
            running.relay = asyncio.create_task(relay.run(running.relay_stop), name=_RELAY_TASK)
        for name, job in components.tasks.items():
            running.tasks[name] = asyncio.create_task(_as_task(job, running.tasks_stop), name=name)
        log.info(
            "service.ready",
            grpc_address=running.server.address,
            services=running.server.service_names,
            tasks=sorted(running.supervised().values()),
        )

    async def _supervise(self, running: _Running, stopped: asyncio.Task[bool]) -> None:
        supervised = running.supervised()
        done, _ = await asyncio.wait({stopped, *supervised}, return_when=asyncio.FIRST_COMPLETED)
        ended = [task for task in supervised if task in done]
        if not ended:
            return
        task = ended[0]
        name = supervised[task]
        running.reported.add(task)
        exc = task.exception() if not task.cancelled() else None
        if isinstance(exc, PlateauError):
            log.error("service.task_failed", task=name, error=str(exc))
            raise exc
        if exc is not None:
            log.error("service.task_crashed", task=name, exc_info=exc)
        else:
            log.error("service.task_ended", task=name, detail="a background task returned early")
        raise BackgroundTaskError(name)

    async def _stop(self, running: _Running) -> None:
        budget = self._budget
        if running.server is not None:
            await running.server.set_not_serving()
            await running.server.stop(budget.grpc_grace)
        running.tasks_stop.set()
        await _wind_down(running.tasks, budget.tasks, running.reported)
        running.relay_stop.set()
        if running.relay is not None:
            await _wind_down({_RELAY_TASK: running.relay}, budget.relay, running.reported)
        if running.pool is not None:
            try:
                await asyncio.wait_for(running.pool.close(), budget.pool)
            except TimeoutError:
                log.warning("service.pool_close_timeout", seconds=budget.pool)
                running.pool.terminate()


async def _connect(dsn: str) -> asyncpg.Pool:
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            return await create_pool(dsn)
    except TimeoutError:
        parts = urlsplit(dsn)
        raise DependencyUnavailableError(
            f"PostgreSQL at {parts.hostname}:{parts.port or 5432} did not answer within "
            f"{_CONNECT_TIMEOUT:.0f} s",
            "check that it is up and that PLATEAU_DATABASE_URL points at it",
        ) from None


async def _as_task(job: BackgroundTask, stop: asyncio.Event) -> None:
    await job(stop)


async def _wind_down(
    tasks: Mapping[str, asyncio.Task[None]],
    timeout: float,
    reported: set[asyncio.Task[None]],
) -> None:
    """Let tasks return on their own for ``timeout`` seconds, then cancel the rest."""
    pending = [t for t in tasks.values() if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            log.warning("service.task_cancelled", task=task.get_name(), after_s=timeout)
            task.cancel()
        if late:
            await asyncio.wait(late)
    for name, task in tasks.items():
        if task in reported or task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            log.error("service.task_failed_while_stopping", task=name, exc_info=exc)
