"""Settings of the ``plateau`` command itself: where the embedded default lives, its ports.

They come from ``PLATEAU_*`` environment variables through the runtime's one settings
mechanism; a bad value stops the command with a message that names the variable.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from plateau_runtime.services import SERVICES, ServiceSpec
from plateau_runtime.settings import RuntimeSettings, load_settings

#: 0 means "any free loopback port".
Port = Annotated[int, Field(ge=0, le=65535)]


def env_name(spec: ServiceSpec, suffix: str) -> str:
    """The variable that configures ``suffix`` of one service, e.g. ``PLATEAU_ACD_GRPC_PORT``."""
    return f"PLATEAU_{spec.schema.upper()}_{suffix}"


class _CliSettingsBase(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLATEAU_", extra="ignore", env_ignore_empty=True)

    home: Path = Field(
        default=Path(".plateau"), description="Data, logs and state of the embedded default."
    )
    postgres_port: Port = Field(
        default=0, description="Loopback port of the embedded PostgreSQL; 0 picks a free one."
    )
    kafka_port: Port = Field(
        default=0, description="Loopback port of the embedded broker; 0 picks a free one."
    )
    https_port: Port = Field(
        default=8443, description="Port of the access gateway's HTTPS API; 0 picks a free one."
    )


@cache
def _settings_class() -> type[_CliSettingsBase]:
    # One gRPC port field per service, so PLATEAU_<SERVICE>_GRPC_PORT is validated like the rest.
    fields: dict[str, Any] = {
        f"{spec.schema}_grpc_port": (Port, Field(default=spec.grpc_port)) for spec in SERVICES
    }
    return create_model("CliSettings", __base__=_CliSettingsBase, **fields)


class CliSettings:
    """The validated settings of one ``plateau`` invocation."""

    def __init__(self, values: _CliSettingsBase) -> None:
        self._values = values
        self.home = values.home.expanduser().absolute()
        self.postgres_port = values.postgres_port
        self.kafka_port = values.kafka_port
        self.https_port = values.https_port

    def grpc_port(self, spec: ServiceSpec) -> int:
        """The gRPC port ``plateau up`` gives a service (its well-known port unless overridden)."""
        port = getattr(self._values, f"{spec.schema}_grpc_port")
        assert isinstance(port, int)
        return port


def load_cli_settings() -> CliSettings:
    """Read and validate the environment, or raise a ``ConfigurationError`` naming the variable."""
    values = load_settings(_settings_class())
    # The services read the runtime settings; a bad one is reported here, once, before they start.
    load_settings(RuntimeSettings)
    return CliSettings(values)
