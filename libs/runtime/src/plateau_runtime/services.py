"""The five services of the platform: names, packages, schemas and well-known ports.

``plateau up``, the service host and the tests all read this one table.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from plateau_runtime.migrations import ServiceSchema


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and where it keeps its data."""

    name: str  # as in services/<name>/
    package: str  # importable package; ``python -m <package>`` starts it
    schema: str  # its own PostgreSQL schema (and role ``plateau_<schema>``)
    grpc_port: int  # gRPC port of its API and health service in the embedded default

    def package_dir(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise LookupError(f"package {self.package} is not installed")
        return Path(next(iter(spec.submodule_search_locations)))

    def migrations_dir(self) -> Path | None:
        """``services/<name>/migrations`` in a checkout, ``<package>/migrations`` in a wheel."""
        package_dir = self.package_dir()
        for candidate in (package_dir / "migrations", package_dir.parents[1] / "migrations"):
            if candidate.is_dir():
                return candidate
        return None

    def service_schema(self) -> ServiceSchema:
        return ServiceSchema(self.schema, self.migrations_dir())


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("sip-gateway", "plateau_sip_gateway", "sip_gateway", 50051),
    ServiceSpec("acd", "plateau_acd", "acd", 50052),
    ServiceSpec("dialer", "plateau_dialer", "dialer", 50053),
    ServiceSpec("stats-projector", "plateau_stats_projector", "stats_projector", 50054),
    ServiceSpec("access-gateway", "plateau_access_gateway", "access_gateway", 50055),
)


def service(name: str) -> ServiceSpec:
    """The spec of a service by its name; ``KeyError`` lists the known names."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")
