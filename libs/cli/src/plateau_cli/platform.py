"""``plateau up``: start the embedded default and supervise it until Ctrl-C or SIGTERM.

Order of start: PostgreSQL, broker and topics, database and migrations, then the services,
each a child process ``python -m <package>``. Order of stop is the reverse, and nothing we
started outlives us: whatever is left among our descendants at the end is stopped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

from plateau_cli.access import ACCESS, AccessDemo, prepare_access
from plateau_cli.checks import SERVING, grpc_health, port_in_use
from plateau_cli.configure import ACD, apply_demo
from plateau_cli.console import Console
from plateau_cli.home import Home, process_matches, utc_now
from plateau_cli.provision import (
    DATABASE,
    Migrated,
    ensure_database,
    migrate_services,
    republish_to_fresh_broker,
    with_database,
    without_password,
)
from plateau_cli.settings import CliSettings, env_name
from plateau_runtime.bus import ensure_topics
from plateau_runtime.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    ManagedProcess,
    free_port,
    postgres_bin_dir,
)
from plateau_runtime.errors import ConfigurationError, DependencyUnavailableError, PlateauError
from plateau_runtime.services import SERVICES, ServiceSpec

HOST = "127.0.0.1"
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_RESET = 60.0  # serving this long resets the back-off
STOP_GRACE = 10.0
UP_WARNING_AFTER = 90.0
POLL_INTERVAL = 0.2
PROBE_INTERVAL = 0.5


class Interrupted(BaseException):
    """A stop was asked (SIGINT, SIGTERM or SIGHUP) while ``plateau up`` was starting."""


class StopSignals:
    """Records SIGINT/SIGTERM/SIGHUP; the supervisor looks at it at points where stopping is safe.

    The handler only sets a flag: an exception raised at an arbitrary instruction could land
    inside the bookkeeping of a child process (leaving it unknown, or a lock held) and
    break the orderly stop that must follow.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def install(self) -> None:
        for sig in self._SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise ``Interrupted`` if a stop was asked."""
        if self.received is not None:
            raise Interrupted(self.received)

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass
class ServiceProcess:
    """One supervised service: its child process, output pump, back-off and health."""

    spec: ServiceSpec
    grpc_host: str  # where its health is asked
    grpc_port: int
    env: dict[str, str]
    log_path: Path
    console: Console
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    launches: int = 0
    restarts: int = 0
    delay: float = INITIAL_BACKOFF
    next_start: float | None = 0.0
    serving: bool = False
    serving_since: float = 0.0
    last_probe: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)
    _log_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pumps: list[threading.Thread] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, now: float) -> None:
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.spec.package],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            # Its own process group: a Ctrl-C reaches the supervisor only, which then stops
            # the services in order.
            start_new_session=True,
        )
        self.launches += 1
        self.started_at = now
        self.next_start = None
        self.serving = False
        self.last_probe = 0.0
        assert self.process.stdout is not None
        pump = threading.Thread(
            target=self._pump, args=(self.process.stdout,), name=f"pump-{self.name}", daemon=True
        )
        pump.start()
        self._pumps = [p for p in self._pumps if p.is_alive()] + [pump]

    def _pump(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                with self._log_lock:
                    if self._log is not None:
                        self._log.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        self._log.flush()
                self.console.service_line(self.name, raw.decode("utf-8", "replace").rstrip())

    def step(self, now: float) -> bool:
        """Notice an exit, (re)start when due; whether anything recorded in state changed."""
        changed = False
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            ran_for = now - self.started_at
            if self.serving and now - self.serving_since >= HEALTHY_RESET:
                self.delay = INITIAL_BACKOFF
            hint = " (a configuration or dependency error, see its line above)" if code == 2 else ""
            self.console.say(
                f"{self.name} exited unexpectedly ({_describe_exit(code)} after {ran_for:.1f} s)"
                f"{hint}; restarting in {self.delay:g} s — log: {self.log_path}",
                "warning",
            )
            self.process = None
            self.serving = False
            self.next_start = now + self.delay
            self.delay = min(self.delay * 2, MAX_BACKOFF)
            changed = True
        if self.process is None and self.next_start is not None and now >= self.next_start:
            self.start(now)
            if self.launches > 1:
                self.restarts += 1
                self.console.say(
                    f"{self.name} restarted (pid {self.pid}, restart #{self.restarts})"
                )
            changed = True
        return changed

    def probe(self, now: float) -> bool:
        """Ask its health if it is not known to serve yet; whether it just became SERVING."""
        if self.process is None or self.serving or now - self.last_probe < PROBE_INTERVAL:
            return False
        self.last_probe = now
        if grpc_health(self.grpc_port, self.grpc_host, timeout=0.5) == SERVING:
            self.serving = True
            self.serving_since = now
            return True
        return False

    def terminate(self) -> None:
        """Ask it (and anything it started in its process group) to stop."""
        self.next_start = None
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is not None:
            try:
                self.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.console.say(f"{self.name} did not stop in {STOP_GRACE:g} s; killing it")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            # The group may hold helpers that outlived the service itself.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        for pump in self._pumps:
            pump.join(2)
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None


def _process_entry(process: ManagedProcess | None) -> dict[str, Any]:
    if process is None:
        return {"pid": None, "create_time": None}
    return {"pid": process.pid, "create_time": _create_time(process.pid)}


class Platform:
    """The embedded default of one home: infrastructure plus supervised services."""

    def __init__(
        self,
        settings: CliSettings,
        home: Home,
        console: Console,
        signals: StopSignals,
        *,
        with_services: bool = True,
        on_up: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_up = on_up  # called once every service serves (``plateau demo`` starts traffic)
        self.signals = signals
        self.home = home
        self.console = console
        self.with_services = with_services
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None
        self.services: list[ServiceProcess] = []
        self.started_at = utc_now()
        self._admin_dsn = ""
        self._state_written = False
        self.access: AccessDemo | None = None

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check everything that can be checked first, then start the parts in order."""
        previous = self.home.read_state()
        self._refuse_leftovers(previous)
        pg_port, kafka_port, grpc_ports = self._choose_ports(previous)
        https_port = self._choose_https_port({pg_port, kafka_port, *grpc_ports.values()})
        check_data_dir(self.home.pg_data)
        if self.with_services:
            _check_services_installed()

        check = self.signals.check
        say = self.console.say
        say(f"home {self.home.root}")
        say(f"starting PostgreSQL on {HOST}:{pg_port} (data: {self.home.pg_data})")
        self.postgres = EmbeddedPostgres(self.home.pg_data, pg_port, host=HOST)
        self.postgres.start()
        check()

        say(f"starting the broker on {HOST}:{kafka_port}")
        self.broker = EmbeddedBroker(kafka_port, self.home.log_path("broker"), host=HOST)
        self.broker.start()
        check()
        created = asyncio.run(ensure_topics(self.broker.bootstrap))
        if created:
            say(f"created topics {', '.join(created)}")

        self._admin_dsn = with_database(self.postgres.admin_dsn, DATABASE)
        if asyncio.run(ensure_database(self.postgres.admin_dsn)):
            say(f"created database {DATABASE!r}")
        passwords = self.home.role_passwords(s.name for s in SERVICES)
        check()
        migrated = asyncio.run(migrate_services(self._admin_dsn, SERVICES, passwords))
        applied = sum(len(m.applied) for m in migrated)
        say(f"migrations: {applied} applied, schemas of {len(migrated)} services up to date")
        if asyncio.run(republish_to_fresh_broker(self._admin_dsn, SERVICES)):
            say("the embedded broker starts empty: relays republish every stored event")
        check()
        access = self._seed_demo(migrated, https_port)

        if self.with_services:
            probe_host = _reachable_host(os.environ.get("PLATEAU_GRPC_HOST", ""))
            call_control = f"{probe_host}:{grpc_ports['sip-gateway']}"
            for item in migrated:
                spec = item.service
                env = {
                    **os.environ,
                    "PLATEAU_DATABASE_URL": item.dsn,
                    "PLATEAU_KAFKA_BOOTSTRAP": self.broker.bootstrap,
                    "PLATEAU_GRPC_PORT": str(grpc_ports[spec.name]),
                    "PLATEAU_CALL_CONTROL_TARGET": call_control,
                    "PLATEAU_LOG_FORMAT": "json",
                    "PYTHONUNBUFFERED": "1",
                }
                if spec.name == ACCESS.name:
                    env |= access.environment
                self.services.append(
                    ServiceProcess(
                        spec,
                        probe_host,
                        grpc_ports[spec.name],
                        env,
                        self.home.log_path(spec.name),
                        self.console,
                    )
                )
        self.write_state()
        say(f"PostgreSQL: {without_password(self._admin_dsn)} (password in {self._password_path})")
        say(f"broker:     {self.broker.bootstrap}")
        say(f"logs:       {self.home.logs}")
        if self.with_services:
            names = ", ".join(f"{s.name}:{s.grpc_port}" for s in self.services)
            say(f"starting services (gRPC ports): {names}")

    def _choose_https_port(self, taken: set[int]) -> int:
        if not self.with_services:
            return 0
        return self._port(
            self.settings.https_port, "the access gateway", "PLATEAU_HTTPS_PORT", None, taken
        )

    def _seed_demo(self, migrated: list[Migrated], https_port: int) -> AccessDemo:
        """The demo tenant's configuration, and the access gateway's certificate and demo
        users (each made once)."""
        acd = next(item for item in migrated if item.service.name == ACD.name)
        for line in apply_demo(acd.dsn):
            self.console.say(f"configuration: {line}")
        self.signals.check()
        access = next(item for item in migrated if item.service.name == ACCESS.name)
        self.access = prepare_access(access.dsn, self.home.root, HOST, https_port)
        for line in self.access.lines:
            self.console.say(f"access: {line}")
        self.signals.check()
        return self.access

    @property
    def _password_path(self) -> Path:
        return self.home.pg_data.parent / "postgres-superuser"

    def _refuse_leftovers(self, previous: dict[str, Any] | None) -> None:
        if not previous:
            return
        entries = [("postgres", previous.get("postgres")), ("broker", previous.get("broker"))]
        entries += list((previous.get("services") or {}).items())
        alive = [
            (name, entry["pid"])
            for name, entry in entries
            if isinstance(entry, dict)
            and process_matches(entry.get("pid"), entry.get("create_time"))
        ]
        if alive:
            listed = ", ".join(f"{name} (pid {pid})" for name, pid in alive)
            pids = " ".join(str(pid) for _, pid in alive)
            raise PlateauError(
                f"processes of an earlier `plateau up` in {self.home.root} are still running: "
                f"{listed}",
                f"stop them (kill {pids}) and start again",
            )

    def _choose_ports(self, previous: dict[str, Any] | None) -> tuple[int, int, dict[str, int]]:
        previous_pg = ((previous or {}).get("postgres") or {}).get("port")
        # Ports given explicitly are not listening yet when the free ones are picked: a free
        # pick must not land on one of them (the OS may offer it, since nobody holds it).
        reserved = {self.settings.postgres_port, self.settings.kafka_port}
        if self.with_services:
            reserved |= {self.settings.grpc_port(spec) for spec in SERVICES}
        reserved.discard(0)
        pg_port = self._port(
            self.settings.postgres_port,
            "PostgreSQL",
            "PLATEAU_POSTGRES_PORT",
            previous_pg,
            reserved,
        )
        reserved.add(pg_port)
        kafka_port = self._port(
            self.settings.kafka_port, "the broker", "PLATEAU_KAFKA_PORT", None, reserved
        )
        reserved.add(kafka_port)
        grpc_ports: dict[str, int] = {}
        if self.with_services:
            for spec in SERVICES:
                port = self.settings.grpc_port(spec)
                grpc_ports[spec.name] = self._port(
                    port, f"the {spec.name} service", env_name(spec, "GRPC_PORT"), None, reserved
                )
                reserved.add(grpc_ports[spec.name])
        chosen = {"PLATEAU_POSTGRES_PORT": pg_port, "PLATEAU_KAFKA_PORT": kafka_port}
        chosen |= {env_name(s, "GRPC_PORT"): grpc_ports[s.name] for s in SERVICES if grpc_ports}
        seen: dict[int, str] = {}
        for variable, port in chosen.items():
            if port in seen:
                raise ConfigurationError(
                    f"{seen[port]} and {variable} both ask for port {port}",
                    "give each its own port",
                )
            seen[port] = variable
        return pg_port, kafka_port, grpc_ports

    @staticmethod
    def _port(
        configured: int, what: str, variable: str, previous: int | None, reserved: set[int]
    ) -> int:
        if configured == 0:
            if previous and previous not in reserved and not port_in_use(previous, HOST):
                return int(previous)  # the same port as last time keeps saved DSNs working
            while (port := free_port(HOST)) in reserved:
                pass  # the OS offered a port another part was given: ask again
            return port
        if port_in_use(configured, HOST):
            raise DependencyUnavailableError(
                f"port {configured} on {HOST} is already in use, so {what} cannot listen on it",
                f"stop what uses it, or set {variable} to a free port",
            )
        return configured

    # -- supervise -----------------------------------------------------------------------

    def supervise(self) -> int:
        """Keep the services running until a stop is asked (exit code 0) or infra dies (1)."""
        if not self.with_services:
            self.console.say("Plateau is up (infrastructure only: --no-services) — stop: Ctrl-C")
        announced = False
        warned = False
        began = time.monotonic()
        while not self.signals.requested:
            now = time.monotonic()
            changed = False
            for service in self.services:
                changed |= service.step(now)
            for service in self.services:
                if service.probe(now):
                    changed = True
                    if announced:
                        self.console.say(f"{service.name} is {SERVING} again")
            if changed:
                self.write_state()
            if not announced and all(s.serving for s in self.services) and self.services:
                announced = True
                self._announce_up()
                if self.on_up is not None:
                    self.on_up()
            if not announced and not warned and now - began > UP_WARNING_AFTER:
                warned = True
                waiting = [s for s in self.services if not s.serving]
                self.console.say(
                    "still waiting for "
                    + ", ".join(f"{s.name} (log: {s.log_path})" for s in waiting)
                    + " to report SERVING",
                    "warning",
                )
            failure = self._infrastructure_failure()
            if failure:
                self.console.say(failure + "; stopping Plateau", "error")
                return 1
            time.sleep(POLL_INTERVAL)
        return 0

    def _announce_up(self) -> None:
        self.console.say(
            f"Plateau is up: {len(self.services)} services {SERVING} — "
            f"check: plateau status · logs: {self.home.logs} · stop: Ctrl-C"
        )
        if self.access is not None:
            self.console.say(self.access.how_to_log_in)

    def _infrastructure_failure(self) -> str:
        for part, label in ((self.postgres, "PostgreSQL"), (self.broker, "the broker")):
            process = part.process if part is not None else None
            if process is not None and not process.alive():
                return f"{label} exited unexpectedly (see {process.log_path})"
        return ""

    # -- state ---------------------------------------------------------------------------

    def write_state(self, *, stopped: bool = False) -> None:
        me = psutil.Process()
        postgres = self.postgres.process if self.postgres else None
        broker = self.broker.process if self.broker else None
        state: dict[str, Any] = {
            "version": 1,
            "home": str(self.home.root),
            "started_at": self.started_at,
            "stopped_at": utc_now() if stopped else None,
            "supervisor": {"pid": me.pid, "create_time": me.create_time()},
            "with_services": self.with_services,
            "postgres": {
                "host": HOST,
                "port": self.postgres.port if self.postgres else None,
                "database": DATABASE,
                "dsn": without_password(self._admin_dsn) if self._admin_dsn else None,
                "password_file": str(self._password_path),
                "data_dir": str(self.home.pg_data),
                "log": str(self.postgres.log_path) if self.postgres else None,
                **_process_entry(None if stopped else postgres),
            },
            "broker": {
                "host": HOST,
                "port": self.broker.port if self.broker else None,
                "bootstrap": self.broker.bootstrap if self.broker else None,
                "log": str(self.broker.log_path) if self.broker else None,
                **_process_entry(None if stopped else broker),
            },
            "services": {
                s.name: {
                    "package": s.spec.package,
                    "grpc_host": s.grpc_host,
                    "grpc_port": s.grpc_port,
                    "pid": None if stopped else s.pid,
                    "create_time": None if stopped or s.pid is None else _create_time(s.pid),
                    "restarts": s.restarts,
                    "serving": s.serving and not stopped,
                    "log": str(s.log_path),
                }
                for s in self.services
            },
        }
        self.home.write_state(state)
        self._state_written = True

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop services, then the broker, then PostgreSQL; leave no child process behind."""
        started_anything = bool(self.services or self.postgres or self.broker)
        if started_anything:
            why = f" ({self.signals.name()} received)" if self.signals.requested else ""
            self.console.say(f"stopping{why}")
        self._stop_services()
        if self.broker is not None:
            self.console.say("stopping the broker")
            self.broker.stop()
        if self.postgres is not None:
            self.console.say("stopping PostgreSQL (fast shutdown)")
            self.postgres.stop()
        self._sweep()
        if self._state_written:
            self.write_state(stopped=True)
        if started_anything:
            self.console.say("Plateau stopped")

    def _stop_services(self) -> None:
        running = [s for s in self.services if s.process is not None]
        if running:
            self.console.say("stopping services: " + ", ".join(s.name for s in running))
        for service in self.services:
            service.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for service in self.services:
            service.wait_or_kill(deadline)

    def _sweep(self) -> None:
        # A signal can land between a fork and the bookkeeping of its child: whatever is
        # still among our descendants now was started by us and must not outlive us.
        leftovers = psutil.Process().children(recursive=True)
        if not leftovers:
            return
        self.console.say(
            "stopping leftover processes: " + ", ".join(str(p.pid) for p in leftovers), "warning"
        )
        _signal_all(leftovers, psutil.Process.terminate)
        _, alive = psutil.wait_procs(leftovers, timeout=5)
        _signal_all(alive, psutil.Process.kill)
        psutil.wait_procs(alive, timeout=5)


def _signal_all(processes: list[psutil.Process], action: Callable[[psutil.Process], None]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            action(process)


def _reachable_host(bind_host: str) -> str:
    """Where to reach a server bound to ``bind_host`` (a wildcard is reached on loopback)."""
    wildcards = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (compared, not bound)
    return HOST if bind_host in wildcards else bind_host


def _check_services_installed() -> None:
    import importlib.util

    for spec in SERVICES:
        if importlib.util.find_spec(f"{spec.package}.__main__") is None:
            raise DependencyUnavailableError(
                f"the {spec.name} service cannot be started: {spec.package} has no __main__ module",
                "reinstall Plateau (./task refreshes the virtualenv), or start the "
                "infrastructure alone with `plateau up --no-services`",
            )


def check_data_dir(data_dir: Path) -> None:
    """Refuse, without touching it, a data directory that is not a usable cluster of ours."""
    try:
        _check_data_dir(data_dir)
    except OSError as exc:
        raise PlateauError(
            f"cannot inspect {data_dir}: {exc.strerror}",
            "run plateau as the user that created PLATEAU_HOME, or point PLATEAU_HOME elsewhere",
        ) from None


def _check_data_dir(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise PlateauError(
            f"{data_dir} is not a directory",
            "move it aside or point PLATEAU_HOME elsewhere; Plateau never overwrites data",
        )
    version_file = data_dir / "PG_VERSION"
    if not version_file.is_file():
        if any(data_dir.iterdir()):
            raise PlateauError(
                f"{data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION)",
                "move it aside or point PLATEAU_HOME elsewhere; Plateau never overwrites data",
            )
        return
    found = version_file.read_text(errors="replace").strip()
    wanted = _server_major_version()
    if wanted and found != wanted:
        raise PlateauError(
            f"{data_dir} holds a PostgreSQL {found!r} cluster but the embedded server is "
            f"PostgreSQL {wanted}",
            "upgrade it with pg_upgrade or point PLATEAU_HOME elsewhere; Plateau never "
            "rewrites data",
        )
    missing = [p for p in ("global/pg_control", "base", "pg_wal") if not (data_dir / p).exists()]
    if missing:
        raise PlateauError(
            f"{data_dir} is a damaged PostgreSQL cluster ({', '.join(missing)} missing)",
            "restore it from a backup or point PLATEAU_HOME elsewhere; Plateau never deletes data",
        )


def _server_major_version() -> str:
    try:
        out = subprocess.run(
            [str(postgres_bin_dir() / "postgres"), "--version"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    # "postgres (PostgreSQL) 18.1" -> "18"
    return out.strip().rsplit(" ", 1)[-1].split(".")[0]
