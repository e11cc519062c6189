"""The restart policy of ``plateau up``'s supervisor, on a clock the test drives: 1 s doubling
to 30 s, back to 1 s once a service has been SERVING for 60 s."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from plateau_cli.console import Console
from plateau_cli.platform import ServiceProcess
from plateau_runtime.services import service

pytestmark = pytest.mark.unit


@dataclass
class StubProcess:
    """Stands in for a child process: alive until the test makes it exit."""

    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class StubService(ServiceProcess):
    def start(self, now: float) -> None:  # no real process: only the bookkeeping
        self.launches += 1
        self.started_at = now
        self.next_start = None
        self.serving = False
        self.process = StubProcess(pid=1000 + self.launches)  # type: ignore[assignment]


def _service(tmp_path: Path) -> tuple[StubService, io.StringIO]:
    out = io.StringIO()
    stub = StubService(service("acd"), "127.0.0.1", 1, {}, tmp_path / "acd.log", Console(out, None))
    return stub, out


def _crash(stub: StubService, code: int = 1) -> None:
    assert stub.process is not None
    stub.process.returncode = code


def test_restarts_back_off_from_1_s_doubling_to_30_s(tmp_path: Path) -> None:
    stub, out = _service(tmp_path)
    now = 0.0
    assert stub.step(now) and stub.launches == 1 and stub.restarts == 0

    waits = []
    for _ in range(7):
        _crash(stub)
        assert stub.step(now)  # exit noticed, restart scheduled
        assert stub.process is None
        wait = stub.next_start - now if stub.next_start is not None else -1
        waits.append(wait)
        assert not stub.step(now + wait - 0.01)  # not yet
        now += wait
        assert stub.step(now)  # restarted
        assert stub.process is not None

    assert waits == [1, 2, 4, 8, 16, 30, 30]
    assert stub.restarts == 7
    assert "acd exited unexpectedly (exit code 1" in out.getvalue()
    assert "acd restarted (pid 1008, restart #7)" in out.getvalue()


def test_sixty_seconds_of_serving_resets_the_back_off(tmp_path: Path) -> None:
    stub, _ = _service(tmp_path)
    stub.step(0.0)
    for now in (1.0, 3.0, 7.0):  # three quick crashes: the next wait would be 8 s
        _crash(stub)
        stub.step(now)
        assert stub.next_start is not None
        stub.step(stub.next_start)

    stub.serving, stub.serving_since = True, 100.0
    _crash(stub, -9)
    stub.step(160.0)

    assert stub.next_start == 161.0


def test_running_without_serving_does_not_reset_the_back_off(tmp_path: Path) -> None:
    stub, _ = _service(tmp_path)
    stub.step(0.0)
    _crash(stub, 2)
    stub.step(0.5)
    assert stub.next_start is not None
    stub.step(stub.next_start)

    _crash(stub, 2)
    stub.step(500.0)  # ran long, but never reported SERVING

    assert stub.next_start == 502.0
