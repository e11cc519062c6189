"""The acd's settings: the runtime's, plus where the gateway's ``CallControl`` is and how
often timers are checked."""

from __future__ import annotations

from pydantic import Field

from plateau_runtime.settings import ServiceSettings


class AcdSettings(ServiceSettings):
    """``PLATEAU_*`` variables of the acd (with the runtime's)."""

    call_control_target: str = Field(
        default="127.0.0.1:50051",
        description="host:port of the sip-gateway's CallControl gRPC service.",
    )
    acd_tick_seconds: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="How often wrap-up timers and maximum waits are checked.",
    )
    acd_tenants: str = Field(
        default="",
        description="Comma-separated tenants this acd serves; empty: every tenant.",
    )
    acd_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Deadline of one CallControl request."
    )

    def served_tenants(self) -> frozenset[str] | None:
        """The tenants to serve, or None for all."""
        names = frozenset(t.strip() for t in self.acd_tenants.split(",") if t.strip())
        return names or None
