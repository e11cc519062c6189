"""``python -m plateau_acd.configure``: apply a configuration file to the acd's event store.

``apply FILE`` validates the file (every problem printed with its line and field, exit 2,
nothing recorded) and records what changed as events (see ``configuration``). ``apply
--demo`` applies the shipped demo tenant unless that tenant was configured before, so an
operator's own changes survive the next ``plateau up``. The store is the one of
``PLATEAU_DATABASE_URL`` (the acd's role). ``plateau config apply`` runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from plateau_acd.adapters.config_file import ConfigFileError, parse_config_text, read_config_file
from plateau_acd.configuration import apply_config, tenant_configured
from plateau_acd.domain.config import PlateauConfig
from plateau_runtime.db import create_pool
from plateau_runtime.errors import PlateauError
from plateau_runtime.eventstore import EventStore
from plateau_runtime.services import service
from plateau_runtime.settings import RuntimeSettings, load_settings

DEMO_FILE = "demo_tenant.yaml"
EXIT_OK = 0
EXIT_BAD_INPUT = 2


def demo_config() -> PlateauConfig:
    """The shipped demo tenant."""
    text = resources.files("plateau_acd").joinpath(DEMO_FILE).read_text(encoding="utf-8")
    return parse_config_text(text, DEMO_FILE)


async def _apply(config: PlateauConfig, source: str, *, only_new: bool) -> list[str]:
    settings = load_settings(RuntimeSettings)
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        store = EventStore(pool, service("acd").schema)
        if only_new:
            fresh = [t.id for t in config.tenants if not await tenant_configured(store, t.id)]
            if not fresh:
                return [f"tenant {t.id}: already configured" for t in config.tenants]
            config = config.model_copy(
                update={"tenants": tuple(t for t in config.tenants if t.id in fresh)}
            )
        outcomes = await apply_config(store, pool, config, source)
    finally:
        await pool.close()
    return [outcome.describe() for outcome in outcomes]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plateau_acd.configure")
    commands = parser.add_subparsers(dest="command", required=True)
    apply = commands.add_parser("apply", help="apply a configuration file")
    what = apply.add_mutually_exclusive_group(required=True)
    what.add_argument("file", nargs="?", type=Path, help="YAML (or JSON) configuration file")
    what.add_argument("--demo", action="store_true", help="the shipped demo tenant, once")
    args = parser.parse_args(argv)
    try:
        if args.demo:
            config, source, only_new = demo_config(), DEMO_FILE, True
        else:
            config, source, only_new = read_config_file(args.file), args.file.name, False
    except ConfigFileError as exc:
        count = len(exc.problems)
        print(f"invalid configuration, nothing applied ({count} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        for line in asyncio.run(_apply(config, source, only_new=only_new)):
            print(line)
    except PlateauError as exc:
        print(f"plateau config: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
