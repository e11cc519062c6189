"""The composition root of the stats projector: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("stats-projector")


def wire(resources: ServiceResources) -> Components:
    """The stats projector's gRPC servicers and background tasks, built on the host's resources.

    Only health and reflection so far; wired here as they arrive:
    its projection consumers.
    """
    return Components()


def build_host() -> ServiceHost:
    """The host that runs the stats projector (``python -m plateau_stats_projector``)."""
    # It builds read models and records no events of its own, so it has nothing to relay.
    return ServiceHost(SPEC, wire, relay=False)
