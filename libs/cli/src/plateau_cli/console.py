"""What ``plateau up`` prints: its own lines and the services' lines, each prefixed by its
source (``acd | ...``), coloured only on a terminal, and copied to ``logs/plateau.log``."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import IO

from plateau_runtime.services import SERVICES

_COLOURS = ("36", "32", "35", "34", "33", "96", "92", "95")
_RESET = "\033[0m"
_LEVEL_COLOURS = {"warning": "33", "error": "31;1"}


class Console:
    """Thread-safe, line-oriented output shared by the supervisor and its output pumps."""

    def __init__(self, stream: IO[str] | None = None, log_path: Path | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._colour = _isatty(self._stream) and not os.environ.get("NO_COLOR")
        self._lock = threading.Lock()
        self._width = max(len("plateau"), *(len(s.name) for s in SERVICES))
        self._colours = {s.name: _COLOURS[i % len(_COLOURS)] for i, s in enumerate(SERVICES)}
        self._log: IO[str] | None = None
        if log_path is not None:
            self.open_log(log_path)

    def open_log(self, path: Path) -> None:
        """Also append the supervisor's own lines to ``path``, with a timestamp."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log = path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def say(self, message: str, level: str = "info") -> None:
        """A line of the supervisor itself."""
        text = message if level == "info" else f"{level}: {message}"
        if self._colour and level in _LEVEL_COLOURS:
            text = f"\033[{_LEVEL_COLOURS[level]}m{text}{_RESET}"
        self._emit("plateau", text, "1")
        with self._lock:
            if self._log is not None:
                stamp = datetime.now().astimezone().isoformat(timespec="seconds")
                self._log.write(f"{stamp} {level} {message}\n")
                self._log.flush()

    def service_line(self, name: str, line: str) -> None:
        """A line a service printed (its JSON log records made readable on a terminal)."""
        text = _readable(line) if self._colour else line
        self._emit(name, text, self._colours.get(name, "37"))

    def _emit(self, source: str, text: str, colour: str) -> None:
        prefix = f"{source:<{self._width}} |"
        if self._colour:
            prefix = f"\033[{colour}m{prefix}{_RESET}"
        with self._lock:
            try:
                self._stream.write(f"{prefix} {text}\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                # Whoever read our output went away; the log files still have everything.
                pass


def _readable(line: str) -> str:
    """``12:00:01 info    service.ready grpc_port=50052`` from a structlog JSON record."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "event" not in record:
        return line
    stamp = str(record.pop("timestamp", ""))[11:19]
    level = str(record.pop("level", ""))
    event = record.pop("event")
    record.pop("service", None)
    extra = " ".join(f"{key}={value}" for key, value in record.items())
    return f"{stamp} {level:<7} {event} {extra}".rstrip()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
