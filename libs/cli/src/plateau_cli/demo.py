"""``plateau demo``: the embedded default (exactly as ``plateau up`` runs it) with simulated
traffic — a carrier calling the demo trunk, agents on the demo extensions and a small
outbound campaign — until Ctrl-C or SIGTERM.

The traffic (``plateau_demo``) runs in a thread of this process with its own event loop,
started once every service serves, and is wound down (calls hung up, agents logged out,
campaign paused) before the platform stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from plateau_cli.console import Console
from plateau_cli.home import AlreadyRunningError, Home
from plateau_cli.platform import HOST, Interrupted, Platform, StopSignals
from plateau_cli.settings import load_cli_settings
from plateau_demo.agents import AgentIdentity
from plateau_demo.model import TrafficSettings
from plateau_demo.traffic import DemoConfig, DemoError, Traffic
from plateau_runtime.errors import ConfigurationError, PlateauError

SOURCE = "demo"
TENANT = "demo"
# The sip-gateway's defaults when no trunks or extensions file is configured (its
# ``config.demo_trunks``; README "SIP"): calls from 127.0.0.1 to +242053000100, outbound
# calls to 127.0.0.1:5070, extensions 1001-1010 with generated passwords.
DEMO_DNIS = "+242053000100"
DEMO_CARRIER = ("127.0.0.1", 5070)
EXTENSIONS_FILE = "sip-extensions.json"
FIRST_EXTENSION = 1001
DEMO_AGENTS = 6  # a-1001 … a-1006 in the demo tenant
STOP_TRAFFIC_S = 20.0
WALLBOARD_WAIT_S = 30.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plateau demo``."""
    demo = commands.add_parser(
        "demo",
        help="start the embedded default with simulated calls, agents and a campaign",
        description="Start the embedded default as `plateau up` does, then simulate traffic "
        "over real SIP and gRPC until Ctrl-C or SIGTERM: a carrier calling the demo trunk "
        "with a daily pattern (morning and afternoon peaks, compressed), agents on the demo "
        "extensions who answer, talk, wrap up and pause, and a small outbound campaign.",
    )
    demo.add_argument(
        "--rate",
        type=float,
        default=10.0,
        metavar="CALLS_PER_MIN",
        help="inbound calls per minute at the morning peak (default 10)",
    )
    demo.add_argument(
        "--agents",
        type=int,
        default=DEMO_AGENTS,
        metavar="N",
        help=f"agents on the floor, extensions 1001 onwards (default {DEMO_AGENTS}, the demo "
        "tenant's agents)",
    )
    demo.add_argument(
        "--no-outbound", action="store_true", help="no outbound campaign, inbound calls only"
    )
    demo.add_argument(
        "--day-minutes",
        type=float,
        default=24.0,
        metavar="MIN",
        help="real minutes per simulated day (default 24: an hour a minute)",
    )
    demo.add_argument(
        "--start-at",
        default="09:30",
        metavar="HH:MM",
        help="simulated time of day at start (default 09:30, before the morning peak)",
    )
    demo.add_argument(
        "--talk",
        type=float,
        default=25.0,
        metavar="SECONDS",
        help="median talk time (lognormal; default 25)",
    )
    demo.add_argument("--seed", type=int, default=None, help="seed of the random draws")
    demo.set_defaults(handler=cmd_demo)


def traffic_settings(args: argparse.Namespace) -> TrafficSettings:
    """The traffic's rhythm from the options (``ConfigurationError`` when out of range)."""
    hours, _, minutes = str(args.start_at).partition(":")
    try:
        start_hour = int(hours) + int(minutes or 0) / 60
    except ValueError:
        start_hour = -1.0
    if not 0 <= start_hour < 24:
        raise ConfigurationError(f"--start-at {args.start_at!r} is not a time", "give HH:MM")
    if args.rate < 0:
        raise ConfigurationError("--rate must not be negative", "give calls per minute, e.g. 10")
    if args.day_minutes <= 0:
        raise ConfigurationError("--day-minutes must be positive", "e.g. --day-minutes 24")
    if args.talk <= 0:
        raise ConfigurationError("--talk must be positive", "e.g. --talk 25")
    if not 1 <= args.agents <= 10:
        raise ConfigurationError(
            f"--agents {args.agents}: the demo extensions are 1001-1010",
            f"give 1 to 10 (the demo tenant configures {DEMO_AGENTS} agents)",
        )
    return TrafficSettings(
        peak_calls_per_minute=args.rate,
        day_minutes=args.day_minutes,
        start_hour=start_hour,
        talk_median_s=args.talk,
    )


def demo_trunk() -> tuple[tuple[str, int], list[str]]:
    """Where the carrier listens and which numbers it calls: the demo trunk's, or those of
    the trunks file's first trunk of the demo tenant with an outbound address."""
    path = os.environ.get("PLATEAU_SIP_TRUNKS_FILE")
    if not path:
        return DEMO_CARRIER, [DEMO_DNIS]
    try:
        trunks = json.loads(Path(path).read_text(encoding="utf-8"))["trunks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot read the trunks file {path}: {exc}", "check PLATEAU_SIP_TRUNKS_FILE"
        ) from None
    for trunk in trunks:
        if trunk.get("tenant") == TENANT and trunk.get("enabled", True) and trunk.get("outbound"):
            target = trunk["outbound"][0]
            numbers = list(trunk.get("entry_points") or {})
            if numbers:
                return (str(target["host"]), int(target.get("port", 5060))), numbers
    raise ConfigurationError(
        f"the trunks file {path} has no trunk of tenant {TENANT!r} with an outbound address "
        "and entry points",
        "add one, or unset PLATEAU_SIP_TRUNKS_FILE to use the demo trunk",
    )


def _check_carrier_port(address: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigurationError(
                f"UDP port {address[1]} on {address[0]} is in use ({exc.strerror}), but the "
                "demo's carrier must listen there: the demo trunk sends outbound calls to it",
                "stop what uses it (e.g. a sipp playing the carrier) and start again",
            ) from None


def _passwords(home: Home) -> dict[str, str]:
    path = Path(os.environ.get("PLATEAU_SIP_EXTENSIONS_FILE") or home.root / EXTENSIONS_FILE)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlateauError(
            f"cannot read the SIP extensions' passwords from {path}: {exc}",
            "the sip-gateway writes them at its first start; check its log",
        ) from None
    return {str(k): str(v) for k, v in raw.items()}


class TrafficThread:
    """Runs ``Traffic`` in its own thread and event loop; ``stop`` winds it down and waits."""

    def __init__(self, console: Console, log_path: Path) -> None:
        self.console = console
        self.log_path = log_path
        self._log_lock = threading.Lock()
        self.config: DemoConfig | None = None
        self.wallboard = ""  # the access gateway's URL
        self.credentials = Path()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()

    def say(self, line: str) -> None:
        """A line of the traffic: on the console, and in ``logs/demo.log`` with its time."""
        self.console.service_line(SOURCE, line)
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        with self._log_lock, contextlib.suppress(OSError):
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(f"{stamp} {line}\n")

    def start(self) -> None:
        if self.config is None or self._thread is not None:
            return
        # A daemon only so that a traffic stuck past STOP_TRAFFIC_S cannot keep the
        # process alive once the platform is stopped; it is joined like any other.
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # the platform goes on; say why the traffic stopped
            self.console.say(f"the demo traffic stopped: {exc.__class__.__name__}: {exc}", "error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        assert self.config is not None
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        if self._stopping.is_set():
            return
        await self._wait_for_wallboard()
        if self._stop.is_set():
            return
        self.console.say(
            f"demo: the wallboard is at {self.wallboard} — log in as the demo client "
            f"`demo.supervisor` (its password is in {self.credentials}); simulated traffic "
            "starts now"
        )
        try:
            await Traffic(self.config, self.say).run(self._stop)
        except DemoError as exc:
            self.console.say(str(exc), "error")

    async def _wait_for_wallboard(self) -> None:
        """Wait (at most WALLBOARD_WAIT_S) until the access gateway accepts connections: it
        binds its HTTPS port just after reporting SERVING, and the traffic's own outgoing
        connections must not take that port first when it is an ephemeral one."""
        parts = urlsplit(self.wallboard)
        if not parts.hostname or not parts.port:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WALLBOARD_WAIT_S
        assert self._stop is not None
        while loop.time() < deadline and not self._stop.is_set():
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(parts.hostname, parts.port), 1.0
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is None:
            return
        self._ready.wait(STOP_TRAFFIC_S)
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TRAFFIC_S)
        if self._thread.is_alive():
            self.console.say("the demo traffic did not stop in time", "warning")


class _ConsoleHandler(logging.Handler):
    """The traffic's log records as ``demo | …`` lines."""

    def __init__(self, traffic: TrafficThread) -> None:
        super().__init__(logging.INFO)
        self.traffic = traffic

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += f" ({record.exc_info[1]!r})"
        level = record.levelname.lower()
        self.traffic.say(text if level == "info" else f"{level}: {text}")


def cmd_demo(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    rhythm = traffic_settings(args)
    carrier, numbers = demo_trunk()
    home = Home(settings.home)
    holder = home.lock_holder()
    if holder is not None:  # its carrier holds the port: say what is really going on
        raise AlreadyRunningError(
            f"Plateau is already running (pid {holder})",
            f"use `plateau status`, or stop it with Ctrl-C / kill {holder}",
        )
    if not args.no_outbound:
        _check_carrier_port(carrier)
    with home.acquire_lock():
        console = Console(log_path=home.log_path("plateau"))
        signals = StopSignals()
        traffic = TrafficThread(console, home.log_path(SOURCE))
        logger = logging.getLogger("plateau_demo")
        handler = _ConsoleHandler(traffic)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

        def configure_and_start() -> None:
            traffic.config = _config(args, rhythm, platform, carrier, numbers)
            traffic.wallboard = platform.access.url if platform.access else ""
            traffic.credentials = home.root / "access-users.json"
            traffic.start()

        platform = Platform(settings, home, console, signals, on_up=configure_and_start)
        try:
            signals.install()
            platform.start()
            return platform.supervise()
        except Interrupted:
            return 0
        except PlateauError:
            if signals.requested:
                return 0
            raise
        finally:
            try:
                traffic.stop()
                platform.stop()
            finally:
                signals.restore()
                logger.removeHandler(handler)
                console.close()


def _config(
    args: argparse.Namespace,
    rhythm: TrafficSettings,
    platform: Platform,
    carrier: tuple[str, int],
    numbers: list[str],
) -> DemoConfig:
    targets: dict[str, str] = {s.name: f"{s.grpc_host}:{s.grpc_port}" for s in platform.services}
    passwords = _passwords(platform.home)
    extensions = [str(FIRST_EXTENSION + i) for i in range(args.agents)]
    missing = [e for e in extensions if e not in passwords]
    if missing:
        raise PlateauError(
            f"no SIP password for extension(s) {', '.join(missing)}",
            "use fewer --agents, or add them to the extensions file",
        )
    sip_host = os.environ.get("PLATEAU_SIP_HOST") or HOST
    if sip_host in {"0.0.0.0", "::", "[::]"}:  # noqa: S104 (compared, not bound)
        sip_host = HOST
    sip_port = int(os.environ.get("PLATEAU_SIP_PORT") or 5060)
    extra: dict[str, Any] = {}
    if args.seed is not None:
        extra["seed"] = args.seed
    return DemoConfig(
        gateway=(sip_host, sip_port),
        carrier=carrier,
        dialled_numbers=numbers,
        acd_target=targets["acd"],
        dialer_target=targets["dialer"],
        agents=[AgentIdentity(f"a-{e}", e, passwords[e]) for e in extensions],
        settings=rhythm,
        outbound=not args.no_outbound,
        tenant=TENANT,
        **extra,
    )
