"""The composition root of the access gateway: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("access-gateway")


def wire(resources: ServiceResources) -> Components:
    """The access gateway's gRPC servicers and background tasks, built on the host's resources.

    Only health and reflection so far; wired here as they arrive:
    its HTTPS, SSE and web routes.
    """
    return Components()


def build_host() -> ServiceHost:
    """The host that runs the access gateway (``python -m plateau_access_gateway``)."""
    return ServiceHost(SPEC, wire)
