"""Ports picked automatically never land on a port another part was given explicitly: the
explicit one is not listening yet when the free ones are picked, so the OS may offer it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from plateau_cli import platform
from plateau_cli.console import Console
from plateau_cli.home import Home
from plateau_cli.platform import Platform, StopSignals
from plateau_cli.settings import load_cli_settings
from plateau_runtime.services import SERVICES

pytestmark = pytest.mark.unit


def offered(ports: list[int]) -> Iterator[int]:
    yield from ports
    raise AssertionError("asked the OS for more ports than the test scripted")


def test_a_free_pick_skips_a_port_given_to_another_part(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = {f"PLATEAU_{s.schema.upper()}_GRPC_PORT": 41001 + i for i, s in enumerate(SERVICES)}
    for name, port in given.items():
        monkeypatch.setenv(name, str(port))
    monkeypatch.setenv("PLATEAU_HOME", str(tmp_path))
    monkeypatch.delenv("PLATEAU_POSTGRES_PORT", raising=False)
    monkeypatch.delenv("PLATEAU_KAFKA_PORT", raising=False)
    # The OS offers the sip-gateway's gRPC port first (nobody listens on it yet), then
    # a port of its own, then another one given explicitly, then a third port.
    ports = offered([41001, 42001, 41003, 42002])
    monkeypatch.setattr(platform, "free_port", lambda host: next(ports))
    monkeypatch.setattr(platform, "port_in_use", lambda port, host: False)
    plateau = Platform(load_cli_settings(), Home(tmp_path), Console(io.StringIO()), StopSignals())

    pg_port, kafka_port, grpc_ports = plateau._choose_ports(None)

    assert (pg_port, kafka_port) == (42001, 42002)
    assert sorted(grpc_ports.values()) == sorted(given.values())


def test_the_last_postgres_port_is_not_reused_when_it_was_given_to_a_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PLATEAU_HOME", str(tmp_path))
    monkeypatch.setenv(f"PLATEAU_{SERVICES[0].schema.upper()}_GRPC_PORT", "41001")
    ports = offered([42001, 42002])
    monkeypatch.setattr(platform, "free_port", lambda host: next(ports))
    monkeypatch.setattr(platform, "port_in_use", lambda port, host: False)
    plateau = Platform(load_cli_settings(), Home(tmp_path), Console(io.StringIO()), StopSignals())

    pg_port, _, _ = plateau._choose_ports({"postgres": {"port": 41001}})

    assert pg_port == 42001
