"""The composition root of the ACD: its parts, wired by constructor injection."""

from __future__ import annotations

from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("acd")


def wire(resources: ServiceResources) -> Components:
    """The ACD's gRPC servicers and background tasks, built on the host's resources.

    Only health and reflection so far; wired here as they arrive:
    its `AgentDesk` servicer and event consumers.
    """
    return Components()


def build_host() -> ServiceHost:
    """The host that runs the ACD (``python -m plateau_acd``)."""
    return ServiceHost(SPEC, wire)
