"""The composition root of the dialer: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_dialer.campaigns import CampaignCommands
from plateau_dialer.entrypoints.campaigns import campaigns_service
from plateau_dialer.settings import DialerSettings
from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("dialer")


def wire(resources: ServiceResources) -> Components:
    """The dialer's ``Campaigns`` servicer (campaigns and customer-file imports).

    Still to come: the pacing loop and the consumers of call outcomes.
    """
    settings = resources.settings
    if not isinstance(settings, DialerSettings):
        settings = DialerSettings.model_validate(settings.model_dump())
    commands = CampaignCommands(
        resources.store,
        resources.pool,
        default_region=settings.dialer_default_region.upper(),
        allowed_regions=settings.allowed_regions(),
    )
    return Components(
        grpc_services=[
            campaigns_service(commands, max_upload_bytes=settings.dialer_max_upload_bytes)
        ]
    )


def build_host() -> ServiceHost:
    """The host that runs the dialer (``python -m plateau_dialer``)."""
    return ServiceHost(SPEC, wire, settings_type=DialerSettings)
