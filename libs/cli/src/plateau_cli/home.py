"""The embedded default's home directory (``PLATEAU_HOME``, ``.plateau/`` by default).

It holds the PostgreSQL cluster (``pg/``), the logs (``logs/``), the lock that makes one
``plateau up`` at a time (``up.lock``), what is running where (``state.json``) and the
generated database passwords of the service roles (``secrets.json``, mode 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from plateau_runtime.errors import PlateauError

STATE_VERSION = 1


class AlreadyRunningError(PlateauError):
    """Another ``plateau up`` holds the lock of this home."""


class StartingError(PlateauError):
    """``plateau up`` holds the lock but has not written its state yet."""


class NotRunningError(PlateauError):
    """Nothing is running from this home."""

    def __init__(self) -> None:
        super().__init__("Plateau is not running", "start it with ./task up")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_private(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` atomically, creating it with ``mode`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class UpLock:
    """The exclusive lock held by the one ``plateau up`` of a home, with its pid inside."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> UpLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Home:
    """Paths and files of one ``PLATEAU_HOME``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock_path = root / "up.lock"
        self.state_path = root / "state.json"
        self.secrets_path = root / "secrets.json"
        self.logs = root / "logs"
        self.pg_data = root / "pg" / "data"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def acquire_lock(self) -> UpLock:
        """Become the one ``plateau up`` of this home, or raise ``AlreadyRunningError``.

        A refused attempt changes nothing: the lock file is only opened, never rewritten.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PlateauError(
                f"cannot use {self.root} as PLATEAU_HOME: {exc.strerror}",
                "make it writable or point PLATEAU_HOME at a directory you own",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunningError(
                f"Plateau is already running (pid {pid})",
                f"use `plateau status`, or stop it with Ctrl-C / kill {pid}",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return UpLock(fd)

    def read_state(self) -> dict[str, Any] | None:
        """What the last ``plateau up`` wrote, or ``None`` if it never ran here."""
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text)
        except json.JSONDecodeError:
            raise PlateauError(
                f"{self.state_path} is not valid JSON",
                "the next `plateau up` rewrites it; if none is running you may delete it",
            ) from None
        if not isinstance(state, dict):
            raise PlateauError(f"{self.state_path} is not a state file", "delete it")
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        _write_private(self.state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def running_state(self) -> dict[str, Any]:
        """The state of the ``plateau up`` running from this home, or ``NotRunningError``."""
        state = self.read_state()
        if state is None or not supervisor_alive(state):
            holder = self.lock_holder()
            if holder is not None:
                raise StartingError(
                    f"Plateau is starting (pid {holder})",
                    "wait for 'Plateau is up' in its output, then ask again",
                )
            raise NotRunningError()
        return state

    def lock_holder(self) -> int | None:
        """The pid written in up.lock if that process is a live ``plateau`` command."""
        try:
            text = self.lock_path.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():
            return None
        try:
            process = psutil.Process(int(text))
            alive = process.status() != psutil.STATUS_ZOMBIE
            is_plateau = "plateau" in " ".join(process.cmdline())
        except psutil.Error:
            return None
        return process.pid if alive and is_plateau else None

    def role_passwords(self, names: Iterable[str]) -> dict[str, str]:
        """The database password of each service role, generated once and kept in secrets.json."""
        stored: dict[str, Any] = {}
        if self.secrets_path.exists():
            try:
                stored = json.loads(self.secrets_path.read_text())
            except (json.JSONDecodeError, OSError) as exc:
                raise PlateauError(
                    f"{self.secrets_path} cannot be read ({exc})",
                    "restore it from a backup; deleting it makes new passwords at the next "
                    "`plateau up` (migrations set them again)",
                ) from None
        roles: dict[str, str] = dict(stored.get("roles", {}))
        missing = [name for name in names if name not in roles]
        if missing:
            for name in missing:
                roles[name] = secrets.token_urlsafe(24)
            stored["roles"] = roles
            self.root.mkdir(parents=True, exist_ok=True)
            _write_private(self.secrets_path, json.dumps(stored, indent=2) + "\n", 0o600)
        return roles

    def superuser_password(self) -> str:
        """The embedded cluster's superuser password (kept by the launcher beside the data)."""
        path = self.pg_data.parent / "postgres-superuser"
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise PlateauError(
                f"cannot read the PostgreSQL superuser password in {path} ({exc.strerror})",
                "run the command as the user that ran `plateau up`",
            ) from None


def _read_pid(fd: int) -> str:
    # The holder writes its pid just after taking the lock; give it a moment.
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.05)
    return "unknown"


def process_matches(pid: int | None, create_time: float | None = None) -> bool:
    """Whether ``pid`` is alive and, when given, was started at ``create_time`` (not reused)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(process.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


def supervisor_alive(state: dict[str, Any]) -> bool:
    """Whether the ``plateau up`` that wrote ``state`` is still running."""
    supervisor = state.get("supervisor") or {}
    if state.get("stopped_at"):
        return False
    return process_matches(supervisor.get("pid"), supervisor.get("create_time"))
