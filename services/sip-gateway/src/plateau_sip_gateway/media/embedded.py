"""rtpengine as a child process in user space on loopback, for the embedded default and tests.

It runs without the kernel module (``--table=-1``), without the system configuration file
(``--config-file=none``: the packaged one binds every interface), with its ng control port,
its RTP ports and, when asked, its recording spool directory chosen by the caller.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from plateau_runtime.embedded import ManagedProcess
from plateau_runtime.errors import DependencyUnavailableError
from plateau_sip_gateway.media.bencode import BencodeError, decode_dict, encode

#: The Debian package that ships the daemon (not the ``rtpengine`` metapackage, which builds a
#: kernel module).
DEBIAN_PACKAGE = "rtpengine-daemon"
BINARY = "rtpengine"


def rtpengine_binary() -> str:
    """The daemon's path; raises with the package to install when it is missing."""
    found = shutil.which(BINARY)
    if found is None:
        raise DependencyUnavailableError(
            f"the rtpengine binary ({BINARY!r}) is not on PATH",
            f"install the Debian package: apt-get install --no-install-recommends {DEBIAN_PACKAGE}",
        )
    return found


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody has bound right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _free_port_range(host: str, size: int) -> tuple[int, int]:
    # Below Linux's ephemeral range (32768+) so test sockets rarely collide; rtpengine skips
    # any port in its range that is taken, so a partial clash costs nothing.
    for _ in range(50):
        low = random.randrange(10_000, 32_000 - size, 2)
        if all(_udp_free(host, port) for port in range(low, low + min(size, 8))):
            return low, low + size - 1
    raise DependencyUnavailableError(
        f"found no free UDP port range of {size} on {host} for rtpengine's media",
        "free some ports in 10000-32000 or pass port_range",
    )


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def ng_ping(address: tuple[str, int], timeout: float = 0.3) -> bool:
    """Whether rtpengine answers an ng ``ping`` at ``address`` (blocking, for start-up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"ready " + encode({"command": "ping"}), address)
            data = sock.recv(4096)
        except OSError:
            return False
    cookie, _, body = data.partition(b" ")
    with contextlib.suppress(BencodeError):
        return cookie == b"ready" and decode_dict(body).get(b"result") == b"pong"
    return False


class EmbeddedRtpengine:
    """One rtpengine daemon we start and must stop: ``start()``, use ``ng_address``, ``stop()``.

    Everything it binds is on ``host`` (loopback by default). ``recording_dir`` turns on
    call recording to pcap files there (``pcaps/`` and ``metadata/`` below it).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        host: str = "127.0.0.1",
        ng_port: int | None = None,
        port_range: tuple[int, int] | None = None,
        recording_dir: Path | None = None,
        log_level: int = 6,
    ) -> None:
        self.work_dir = work_dir
        self.host = host
        self.ng_port = ng_port or free_udp_port(host)
        self.port_range = port_range or _free_port_range(host, 200)
        self.recording_dir = recording_dir
        self.log_level = log_level
        self.log_path = work_dir / "rtpengine.log"
        self.process: ManagedProcess | None = None

    @property
    def ng_address(self) -> tuple[str, int]:
        return (self.host, self.ng_port)

    def argv(self) -> list[str]:
        low, high = self.port_range
        argv = [
            rtpengine_binary(),
            "--config-file=none",
            "--table=-1",
            f"--interface={self.host}",
            f"--listen-ng={self.host}:{self.ng_port}",
            f"--port-min={low}",
            f"--port-max={high}",
            "--foreground",
            "--log-stderr",
            f"--log-level={self.log_level}",
            "--delete-delay=0",
        ]
        if self.recording_dir is not None:
            argv += [
                f"--recording-dir={self.recording_dir}",
                "--recording-method=pcap",
                "--recording-format=raw",
            ]
        return argv

    def start(self, timeout: float = 10.0) -> None:
        argv = self.argv()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        process = subprocess.Popen(
            argv,
            cwd=self.work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.process = ManagedProcess("rtpengine", process, self.log_path, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                tail = self.process.log_tail(5)
                self.stop()
                raise DependencyUnavailableError(
                    f"rtpengine exited at start: {tail}", f"see {self.log_path}"
                )
            if ng_ping(self.ng_address):
                return
            time.sleep(0.05)
        self.stop()
        raise DependencyUnavailableError(
            f"rtpengine did not answer ng ping on {self.host}:{self.ng_port} in {timeout:.0f} s",
            f"see {self.log_path}",
        )

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is not None:
            self.process.stop(signal.SIGTERM, grace=grace)
            self.process = None
