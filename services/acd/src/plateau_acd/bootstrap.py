"""The composition root of the ACD: its parts, wired by constructor injection."""

from __future__ import annotations

import asyncio

from plateau_acd.adapters.gateway import Gateway, GrpcGateway
from plateau_acd.effects import Effects
from plateau_acd.entrypoints.agent_desk import agent_desk_service
from plateau_acd.entrypoints.calls import calls_consumer
from plateau_acd.entrypoints.campaigns import campaigns_consumer
from plateau_acd.handlers import Acd
from plateau_acd.outbound import Outbound
from plateau_acd.settings import AcdSettings
from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("acd")


def acd_components(
    acd: Acd, gateway: Gateway, resources: ServiceResources, settings: AcdSettings
) -> Components:
    """The ``AgentDesk`` servicer and the ``routing`` task of a built acd.

    The task rebuilds the state from the store (and the campaigns and outbound calls from
    their tables) first, then consumes the gateway's call facts and the dialer's campaign
    facts, follows the store and its timers, and sends effects to the gateway; the desk
    waits for the rebuilt state before it answers a command.
    """
    outbound = Outbound()
    tenants = settings.served_tenants()
    consumer = calls_consumer(
        acd, resources.pool, settings.kafka_bootstrap, tenants=tenants, outbound=outbound
    )
    campaigns = campaigns_consumer(
        outbound, resources.pool, settings.kafka_bootstrap, tenants=tenants
    )
    effects = Effects(acd, gateway)

    async def routing(stop: asyncio.Event) -> None:
        try:
            async with resources.pool.acquire() as conn:
                await outbound.load(conn)
            await acd.load()
            async with asyncio.TaskGroup() as group:
                group.create_task(acd.follow(stop, settings.acd_tick_seconds))
                group.create_task(effects.run(stop))
                group.create_task(campaigns.run(stop))
                group.create_task(consumer.run(stop))
        finally:
            close = getattr(gateway, "close", None)
            if close is not None:
                await close()

    return Components(grpc_services=[agent_desk_service(acd)], tasks={"routing": routing})


def wire(resources: ServiceResources) -> Components:
    """The ACD's ``AgentDesk`` servicer and its routing task, built on the host's resources."""
    settings = resources.settings
    if not isinstance(settings, AcdSettings):
        settings = AcdSettings.model_validate(settings.model_dump())
    acd = Acd(resources.store, resources.pool)
    gateway = GrpcGateway(settings.call_control_target, settings.acd_connect_timeout_seconds)
    return acd_components(acd, gateway, resources, settings)


def build_host() -> ServiceHost:
    """The host that runs the ACD (``python -m plateau_acd``)."""
    return ServiceHost(SPEC, wire, settings_type=AcdSettings)
