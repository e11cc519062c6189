"""The composition root of the stats projector: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service
from plateau_stats_projector.adapters.read_models import Projection, TenantZones
from plateau_stats_projector.entrypoints.consumer import projection_consumer
from plateau_stats_projector.settings import ProjectorSettings

SPEC: ServiceSpec = service("stats-projector")


def wire(resources: ServiceResources) -> Components:
    """The stats projector's background tasks: the consumers that maintain the read models."""
    settings = resources.settings
    if not isinstance(settings, ProjectorSettings):
        settings = ProjectorSettings.model_validate(settings.model_dump())
    projection = Projection(TenantZones())
    tasks = {
        f"projection-{n}": projection_consumer(
            resources.pool, settings.kafka_bootstrap, projection
        ).run
        for n in range(1, settings.stats_consumers + 1)
    }
    return Components(tasks=tasks)


def build_host() -> ServiceHost:
    """The host that runs the stats projector (``python -m plateau_stats_projector``)."""
    # It builds read models and records no events of its own, so it has nothing to relay.
    return ServiceHost(SPEC, wire, settings_type=ProjectorSettings, relay=False)
