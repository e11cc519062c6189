"""The living demo's traffic: one carrier, the agents and the outbound campaign, run together
until asked to stop, then wound down so the platform is left with no call up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk_pb
from plateau_demo.agents import AgentIdentity, Desk, Softphone
from plateau_demo.campaign import DemoCampaign
from plateau_demo.carrier import Carrier
from plateau_demo.endpoint import Address
from plateau_demo.model import TrafficModel, TrafficSettings

log = logging.getLogger(__name__)
REPORT_EVERY_S = 30.0
WIND_DOWN_S = 5.0


class DemoError(Exception):
    """The traffic cannot start (e.g. the carrier's port is taken); the message says why."""


@dataclass(frozen=True)
class DemoConfig:
    """Where the platform listens and what to simulate."""

    gateway: Address
    carrier: Address
    dialled_numbers: list[str]
    acd_target: str
    dialer_target: str
    agents: list[AgentIdentity]
    settings: TrafficSettings = field(default_factory=TrafficSettings)
    outbound: bool = True
    seed: int | None = None
    tenant: str = "demo"


class Traffic:
    """Runs the simulated traffic of ``config`` until ``stop`` is set."""

    def __init__(self, config: DemoConfig, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.rng = random.Random(config.seed)
        self.model = TrafficModel(config.settings, self.rng)
        self.counts: Counter[str] = Counter()
        self.carrier = Carrier(self.model, config.gateway, config.dialled_numbers, self.rng)
        self.phones: list[Softphone] = []
        self.desks: list[Desk] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        host, port = config.carrier
        if not config.outbound:
            port = 0  # nobody calls the carrier: any port will do
        try:
            await self.carrier.open(host, port)
        except OSError as exc:
            raise DemoError(
                f"the demo carrier cannot listen on {host}:{port} (UDP), where the demo trunk "
                f"sends outbound calls: {exc.strerror}; stop what uses it, or run with "
                "--no-outbound"
                if config.outbound
                else f"the demo carrier cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        began = asyncio.get_running_loop().time()
        acd = grpc.aio.insecure_channel(config.acd_target)
        dialer = grpc.aio.insecure_channel(config.dialer_target)
        campaign = DemoCampaign(dialer, config.tenant)
        try:
            for identity in config.agents:
                phone = Softphone(identity, config.gateway, self.model, self.counts)
                await phone.open(config.gateway[0])
                self.phones.append(phone)
                self.desks.append(Desk(identity, acd, config.tenant, self.model, self.counts))
            for phone, desk in zip(self.phones, self.desks, strict=True):
                self._start(phone.keep_registered(stop))
                self._start(desk.watch(stop))
                self._start(desk.work(stop, phone))
            self._start(self.carrier.run_arrivals(stop))
            if config.outbound:
                self._start(self._start_campaign(campaign, stop))
            self._start(self._report(stop))
            s = config.settings
            endpoint = self.carrier.endpoint
            where = f"{endpoint.host}:{endpoint.port}" if endpoint else f"{host}:{port}"
            self.say(
                f"traffic: a carrier on {where} calling "
                f"{', '.join(config.dialled_numbers)} (peak {s.peak_calls_per_minute:g} "
                f"calls/min, a simulated day every {s.day_minutes:g} min starting at "
                f"{_clock(s.start_hour)}), {len(config.agents)} agents on extensions "
                f"{', '.join(a.extension for a in config.agents)}"
                + ("" if config.outbound else "; no outbound campaign")
            )
            await stop.wait()
            self.say("stopping the traffic: hanging up every call, logging the agents out")
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.gather(
                self.carrier.close(), *(p.close() for p in self.phones), return_exceptions=True
            )
            await self._wind_down(campaign if config.outbound else None)
            await acd.close()
            await dialer.close()
            elapsed = asyncio.get_running_loop().time() - began
            self.say("traffic stopped: " + self.summary(elapsed, with_agents=False))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(self._guarded(work)))

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a part of the demo traffic failed")

    async def _start_campaign(self, campaign: DemoCampaign, stop: asyncio.Event) -> None:
        """Start the campaign once the agents are on the floor (its pacing needs them)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
        while not stop.is_set():
            try:
                for line in await campaign.start():
                    self.say(line)
                return
            except grpc.aio.AioRpcError as exc:
                self.say(f"the demo campaign could not be started yet: {exc.details()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 10.0)

    async def _wind_down(self, campaign: DemoCampaign | None) -> None:
        jobs: list[Coroutine[Any, Any, None]] = [d.log_out() for d in self.desks]
        if campaign is not None:
            jobs.append(campaign.pause())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), WIND_DOWN_S)

    async def _report(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_EVERY_S)
            if stop.is_set():
                return
            self.say(self.summary(loop.time() - began))

    def summary(self, elapsed_s: float, *, with_agents: bool = True) -> str:
        """One line: the simulated time, the call counts so far, the agents' states."""
        counts = self.carrier.counts + self.counts
        states = Counter(
            desk_pb.AgentState.Name(d.status.state).removeprefix("AGENT_STATE_").lower()
            + (f" ({d.status.pause_code})" if d.status.pause_code else "")
            for d in self.desks
            if d.status is not None
        )
        hour = self.config.settings.simulated_hour(elapsed_s)
        figures = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        agents = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        line = f"simulated {_clock(hour)} · {figures or 'no call yet'}"
        return line + (f" · agents: {agents or '-'}" if with_agents else "")


def _clock(hour: float) -> str:
    minutes = round(hour * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
