"""Settings from PLATEAU_* variables, and the one-line error that names a bad one."""

from __future__ import annotations

import os

import pytest

from plateau_runtime.errors import ConfigurationError
from plateau_runtime.settings import ServiceSettings, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PLATEAU_"):
            monkeypatch.delenv(name)


def test_defaults_listen_on_loopback_at_the_services_own_port() -> None:
    settings = load_settings(ServiceSettings)
    assert settings.grpc_host == "127.0.0.1"
    assert settings.grpc_port is None  # the host then uses the spec's well-known port
    assert settings.log_format == "auto" and settings.log_level == "info"
    assert settings.database_url == ""


def test_the_environment_sets_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATEAU_DATABASE_URL", "postgresql://plateau_acd:pw@db:5432/plateau")
    monkeypatch.setenv("PLATEAU_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("PLATEAU_GRPC_HOST", "0.0.0.0")
    monkeypatch.setenv("PLATEAU_GRPC_PORT", "6000")
    monkeypatch.setenv("PLATEAU_LOG_FORMAT", "json")
    settings = load_settings(ServiceSettings)
    assert settings.database_url.endswith("@db:5432/plateau")
    assert settings.kafka_bootstrap == "kafka-0:9092,kafka-1:9092"
    assert (settings.grpc_host, settings.grpc_port) == ("0.0.0.0", 6000)
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PLATEAU_GRPC_PORT", "abc"),
        ("PLATEAU_GRPC_PORT", "70000"),
        ("PLATEAU_LOG_FORMAT", "xml"),
        ("PLATEAU_RELAY_BATCH_SIZE", "0"),
    ],
)
def test_an_invalid_value_is_one_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings(ServiceSettings)
    message = str(refused.value)
    assert f"{variable}={value!r}" in message
    assert "\n" not in message
    assert refused.value.hint
