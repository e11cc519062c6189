"""``plateau status``: probe each part of the running embedded default and print a table."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Any

from plateau_cli.checks import SERVING, Health, broker_health, grpc_health, postgres_health
from plateau_cli.home import Home, process_matches
from plateau_cli.provision import with_database
from plateau_runtime.embedded import SUPERUSER
from plateau_runtime.services import SERVICES


@dataclass(frozen=True)
class PartStatus:
    """One row of the status table."""

    part: str
    healthy: bool
    state: str
    where: str
    detail: str


def collect(home: Home) -> list[PartStatus]:
    """Probe PostgreSQL, the broker and every supervised service (raises if not running)."""
    state = home.running_state()
    rows = [_postgres(home, state.get("postgres") or {}), _broker(state.get("broker") or {})]
    services = state.get("services") or {}
    order = [s.name for s in SERVICES if s.name in services]
    order += sorted(set(services) - set(order))
    rows += [_service(name, services[name]) for name in order]
    return rows


def summary(home: Home) -> str:
    """Who supervises what, for the line under the table."""
    state = home.read_state() or {}
    supervisor = state.get("supervisor") or {}
    return (
        f"plateau up: pid {supervisor.get('pid')}, since {state.get('started_at')}, "
        f"home {state.get('home')}, logs {home.logs}"
    )


def _postgres(home: Home, entry: dict[str, Any]) -> PartStatus:
    host, port = entry.get("host", "127.0.0.1"), entry.get("port")
    where = f"{host}:{port}"
    if not port:
        return PartStatus("postgres", False, "not started", "-", "plateau up is still starting")
    password = home.superuser_password()
    dsn = with_database(f"postgresql://{SUPERUSER}:{password}@{host}:{port}/", entry["database"])
    health: Health = asyncio.run(postgres_health(dsn))
    return PartStatus("postgres", health.healthy, health.state, where, health.detail)


def _broker(entry: dict[str, Any]) -> PartStatus:
    bootstrap = entry.get("bootstrap")
    if not bootstrap:
        return PartStatus("broker", False, "not started", "-", "plateau up is still starting")
    health = asyncio.run(broker_health(bootstrap))
    return PartStatus("broker", health.healthy, health.state, bootstrap, health.detail)


def _service(name: str, entry: dict[str, Any]) -> PartStatus:
    host, port = str(entry.get("grpc_host") or "127.0.0.1"), int(entry.get("grpc_port") or 0)
    where = f"{host}:{port}"
    restarts = entry.get("restarts", 0)
    pid = entry.get("pid")
    if not process_matches(pid, entry.get("create_time")):
        return PartStatus(name, False, "down", where, f"not running, restarts {restarts}")
    state = grpc_health(port, host, timeout=1.0)
    return PartStatus(name, state == SERVING, state, where, f"pid {pid}, restarts {restarts}")


def render(rows: list[PartStatus]) -> str:
    """The table a person reads."""
    header = PartStatus("PART", True, "STATE", "ADDRESS", "DETAIL")
    table = [header, *rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in ("part", "state", "where")]
    lines = []
    for row in table:
        lines.append(
            f"{row.part:<{widths[0]}}  {row.state:<{widths[1]}}  "
            f"{row.where:<{widths[2]}}  {row.detail}".rstrip()
        )
    return "\n".join(lines)


def render_json(rows: list[PartStatus]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
