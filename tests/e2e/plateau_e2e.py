"""Helpers of the end-to-end tests: the ``plateau`` command run as a user runs it, as real
processes, each test with its own PLATEAU_HOME and free ports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psutil

from plateau_runtime.embedded import free_port
from plateau_runtime.services import SERVICES

CLI = [sys.executable, "-m", "plateau_cli.main"]
UP_TIMEOUT = 90.0


def make_home() -> Path:
    """A scratch directory for one PLATEAU_HOME (traversable: PostgreSQL may run as another
    user when the tests run as root)."""
    base = Path(tempfile.mkdtemp(prefix="plateau-e2e-"))
    base.chmod(0o755)
    return base / "home"


def wait_for_https(port: str | int, timeout: float = 30) -> None:
    """Wait until the access gateway accepts connections on its HTTPS port: it binds the
    port just after it reports SERVING, so "Plateau is up" may come a moment before."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "the access gateway never accepted a connection"
            time.sleep(0.1)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``plateau`` run: ours without PLATEAU_*, its home, and a free gRPC
    port for every service, for SIP and for HTTPS (the well-known ones may be in use on a
    developer's machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env["PLATEAU_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    *grpc_ports, sip_port, https_port = free_ports(len(SERVICES) + 2)
    for spec, port in zip(SERVICES, grpc_ports, strict=True):
        env[f"PLATEAU_{spec.schema.upper()}_GRPC_PORT"] = str(port)
    env["PLATEAU_SIP_PORT"] = str(sip_port)
    env["PLATEAU_HTTPS_PORT"] = str(https_port)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class PlateauUp:
    """A ``plateau up`` running as a child process, its output collected line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.home = Path(env["PLATEAU_HOME"])
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [*CLI, "up", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = UP_TIMEOUT) -> bool:
        """Whether ``text`` appears in the output before the timeout or the process's end."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if any(text in line for line in self.lines):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    return False
                self._changed.wait(min(left, 0.5))

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.pid).children(recursive=True)
        return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill_everything(self) -> None:
        """Last resort of a failed test: nothing of ours may outlive the test session."""
        doomed = self.descendants()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        doomed += processes_referencing(self.home)
        for process in doomed:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(doomed, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def processes_referencing(path: Path) -> list[psutil.Process]:
    """Processes whose command line mentions ``path`` (e.g. postgres -D <home>/pg/data)."""
    found = []
    needle = str(path)
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and needle in " ".join(process.info["cmdline"] or []):
                found.append(process)
    return found


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under ``root``: its mode and a digest of its bytes."""
    result: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        result[str(path.relative_to(root))] = (stat.st_mode, digest)
    return result


def admin_dsn(home: Path) -> str:
    """The superuser DSN of the platform running from ``home`` (from its state files)."""
    state = json.loads((home / "state.json").read_text())
    password = (home / "pg" / "postgres-superuser").read_text().strip()
    parts = urlsplit(state["postgres"]["dsn"])
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def bootstrap(home: Path) -> str:
    """The broker address of the platform running from ``home``."""
    return str(json.loads((home / "state.json").read_text())["broker"]["bootstrap"])
