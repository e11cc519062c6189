"""The composition root of the dialer: its parts, wired by constructor injection."""

from __future__ import annotations

import asyncio

from plateau_dialer.adapters.gateway import GrpcCallControl
from plateau_dialer.campaigns import CampaignCommands
from plateau_dialer.dialing import DialingLoop, outcomes_consumer
from plateau_dialer.do_not_call import DoNotCallList
from plateau_dialer.entrypoints.campaigns import campaigns_service
from plateau_dialer.settings import DialerSettings
from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("dialer")


def wire(resources: ServiceResources) -> Components:
    """The dialer's ``Campaigns`` servicer (campaigns and customer-file imports) and its
    ``dialing`` task: the pacing loop and the consumer of call outcomes and agent states."""
    settings = resources.settings
    if not isinstance(settings, DialerSettings):
        settings = DialerSettings.model_validate(settings.model_dump())
    commands = CampaignCommands(
        resources.store,
        resources.pool,
        default_region=settings.dialer_default_region.upper(),
        allowed_regions=settings.allowed_regions(),
    )
    dnc = DoNotCallList(
        resources.store, resources.pool, default_region=settings.dialer_default_region.upper()
    )
    gateway = GrpcCallControl(settings.call_control_target)
    loop = DialingLoop(resources.store, resources.pool, gateway)
    consumer = outcomes_consumer(loop, resources.pool, settings.kafka_bootstrap)

    async def dialing(stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(consumer.run(stop))
                group.create_task(loop.follow(stop, settings.dialer_tick_seconds))
        finally:
            await gateway.close()

    return Components(
        grpc_services=[
            campaigns_service(
                commands, dnc, loop, max_upload_bytes=settings.dialer_max_upload_bytes
            )
        ],
        tasks={"dialing": dialing},
    )


def build_host() -> ServiceHost:
    """The host that runs the dialer (``python -m plateau_dialer``)."""
    return ServiceHost(SPEC, wire, settings_type=DialerSettings)
