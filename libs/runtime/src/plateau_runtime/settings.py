"""Settings from ``PLATEAU_*`` environment variables, one mechanism for every service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from plateau_runtime.errors import ConfigurationError

S = TypeVar("S", bound=BaseSettings)


class RuntimeSettings(BaseSettings):
    """What every Plateau process needs: where its database and broker are, how to log."""

    model_config = SettingsConfigDict(env_prefix="PLATEAU_", extra="ignore")

    home: Path = Field(
        default=Path(".plateau"), description="Directory of the embedded default's data and state."
    )
    database_url: str = Field(
        default="", description="asyncpg DSN of the service's own least-privilege role."
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port of the Kafka brokers."
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    otlp_endpoint: str = Field(
        default="", description="OTLP/gRPC collector; empty disables export."
    )
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_idle_poll_seconds: float = Field(default=0.05, gt=0, le=10)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment, or stop with one clear message naming the variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            name = prefix + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}={err.get('input')!r}: {err['msg']}")
        raise ConfigurationError(
            "invalid setting " + "; ".join(problems),
            "fix or unset the environment variable and start again",
        ) from None


class ServiceSettings(RuntimeSettings):
    """A service process's settings: the runtime's, plus where its gRPC server listens."""

    grpc_host: str = Field(
        default="127.0.0.1", description="Address the gRPC server binds (0.0.0.0 in a pod)."
    )
    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the gRPC server; unset, the service's well-known port.",
    )
