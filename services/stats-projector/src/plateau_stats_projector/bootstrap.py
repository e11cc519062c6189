"""The composition root of the stats projector: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service
from plateau_stats_projector.adapters.read_models import Projection, TenantZones
from plateau_stats_projector.entrypoints.consumer import projection_consumer

SPEC: ServiceSpec = service("stats-projector")


def wire(resources: ServiceResources) -> Components:
    """The stats projector's background task: the consumer that maintains the read models."""
    projection = Projection(TenantZones())
    consumer = projection_consumer(resources.pool, resources.settings.kafka_bootstrap, projection)
    return Components(tasks={"projection": consumer.run})


def build_host() -> ServiceHost:
    """The host that runs the stats projector (``python -m plateau_stats_projector``)."""
    # It builds read models and records no events of its own, so it has nothing to relay.
    return ServiceHost(SPEC, wire, relay=False)
