"""The composition root of the SIP gateway: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("sip-gateway")


def wire(resources: ServiceResources) -> Components:
    """The SIP gateway's gRPC servicers and background tasks, built on the host's resources.

    Only health and reflection so far; wired here as they arrive:
    its SIP transport and `CallControl` servicer.
    """
    return Components()


def build_host() -> ServiceHost:
    """The host that runs the SIP gateway (``python -m plateau_sip_gateway``)."""
    return ServiceHost(SPEC, wire)
