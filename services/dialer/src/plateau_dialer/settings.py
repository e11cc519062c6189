"""The dialer's settings: the runtime's, plus how customer files are read."""

from __future__ import annotations

from pydantic import Field

from plateau_runtime.settings import ServiceSettings


class DialerSettings(ServiceSettings):
    """``PLATEAU_*`` variables of the dialer (with the runtime's)."""

    call_control_target: str = Field(
        default="127.0.0.1:50051",
        description="host:port of the sip-gateway's CallControl gRPC service.",
    )
    dialer_tick_seconds: float = Field(
        default=1.0, gt=0, le=30, description="How often the pacing loop decides and dials."
    )
    dialer_max_upload_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Largest customer file an upload may send (RESOURCE_EXHAUSTED beyond).",
    )
    dialer_default_region: str = Field(
        default="CG",
        min_length=2,
        max_length=2,
        description="Region (ISO 3166) of numbers written without a country code.",
    )
    dialer_allowed_regions: str = Field(
        default="CG",
        description="Comma-separated regions whose numbers a campaign may dial.",
    )

    def allowed_regions(self) -> frozenset[str]:
        return frozenset(
            r.strip().upper() for r in self.dialer_allowed_regions.split(",") if r.strip()
        )
