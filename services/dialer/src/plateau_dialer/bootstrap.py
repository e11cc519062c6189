"""The composition root of the dialer: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("dialer")


def wire(resources: ServiceResources) -> Components:
    """The dialer's gRPC servicers and background tasks, built on the host's resources.

    Only health and reflection so far; wired here as they arrive:
    its `Campaigns` servicer, pacing loop and consumers.
    """
    return Components()


def build_host() -> ServiceHost:
    """The host that runs the dialer (``python -m plateau_dialer``)."""
    return ServiceHost(SPEC, wire)
