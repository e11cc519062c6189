"""``plateau``: run the embedded default (``up``), check it (``status``), apply migrations
(``migrate``), verify the event stores' hash chains (``verify``), apply configuration
files (``config apply``), rebuild the read models from the stores (``projections
rebuild``) and manage the access gateway's users (``users add|list|unlock``).

Exit codes: 0 success; 1 already running, unhealthy, or an unexpected error; 2 a problem
with the input or the environment (bad setting, port in use, unreachable database,
unusable data directory), always reported as one line saying what to do; 3 not running.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from plateau_cli import backup, campaigns, demo, dnc
from plateau_cli.access import ACCESS
from plateau_cli.configure import ACD, apply_file
from plateau_cli.console import Console
from plateau_cli.home import AlreadyRunningError, Home, NotRunningError, StartingError
from plateau_cli.platform import Interrupted, Platform, StopSignals
from plateau_cli.provision import DATABASE, migrate_services, verify_chains
from plateau_cli.settings import env_name, load_cli_settings
from plateau_cli.status import collect, render, render_json, summary
from plateau_cli.verify_export import add_parser as add_verify_export
from plateau_cli.verify_export import run as run_verify_export
from plateau_runtime.embedded import SUPERUSER
from plateau_runtime.errors import ConfigurationError, PlateauError
from plateau_runtime.migrations import role_dsn
from plateau_runtime.services import SERVICES, ServiceSpec, service

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_RUNNING = 3


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    home = Home(settings.home)
    with home.acquire_lock():
        console = Console(log_path=home.log_path("plateau"))
        signals = StopSignals()
        platform = Platform(settings, home, console, signals, with_services=not args.no_services)
        try:
            signals.install()
            platform.start()
            return platform.supervise()
        except Interrupted:
            return EXIT_OK
        except PlateauError:
            if signals.requested:
                return EXIT_OK  # e.g. Ctrl-C also reached initdb, which then failed
            raise
        finally:
            try:
                platform.stop()
            finally:
                signals.restore()
                console.close()


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    home = Home(settings.home)
    rows = collect(home)
    if args.json:
        print(render_json(rows))
    else:
        print(render(rows))
        print(summary(home))
    return EXIT_OK if all(r.healthy for r in rows) else EXIT_FAILED


def _chosen_services(args: argparse.Namespace) -> list[ServiceSpec]:
    try:
        return [service(args.service)] if args.service else list(SERVICES)
    except KeyError as exc:
        raise ConfigurationError(str(exc.args[0]), "use one of the names listed") from None


def _running_admin_dsn(home: Home) -> str:
    """The superuser DSN of the running embedded default (``NotRunningError`` otherwise)."""
    pg = home.running_state()["postgres"]
    password = home.superuser_password()
    return (
        f"postgresql://{SUPERUSER}:{password}@{pg['host']}:{pg['port']}/"
        f"{pg.get('database', DATABASE)}"
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    home = Home(settings.home)
    specs = _chosen_services(args)
    if args.admin_url:
        admin_dsn = args.admin_url
        passwords = {s.name: os.environ.get(env_name(s, "DB_PASSWORD"), "") for s in specs}
        generated = [name for name, password in passwords.items() if not password]
        if generated:
            passwords |= {n: home.role_passwords(generated)[n] for n in generated}
    else:
        admin_dsn = _running_admin_dsn(home)
        passwords = home.role_passwords(s.name for s in SERVICES)
    for item in asyncio.run(migrate_services(admin_dsn, specs, passwords)):
        schema = item.service.service_schema()
        if item.applied:
            names = ", ".join(f"{m.source}/{m.version:04d}_{m.name}" for m in item.applied)
            print(f"{item.service.name}: applied {names} (schema {schema.schema})")
        else:
            print(f"{item.service.name}: up to date (schema {schema.schema})")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    specs = _chosen_services(args)
    admin_dsn = args.admin_url or _running_admin_dsn(Home(settings.home))
    intact = True
    for spec, report in asyncio.run(verify_chains(admin_dsn, specs)):
        head = f"head position {report.head_position}, hash {report.head_hash}"
        if report.intact:
            print(f"{spec.name}: intact — {report.events_checked} events, {head}")
        else:
            intact = False
            print(
                f"{spec.name}: BROKEN at position {report.first_broken_position}: "
                f"{report.problem} (intact up to {head})"
            )
    return EXIT_OK if intact else EXIT_FAILED


def cmd_config_apply(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise ConfigurationError(f"{path} is not a file", "give the path of a YAML configuration")
    if args.database_url:
        database_url = args.database_url
    else:
        home = Home(load_cli_settings().home)
        admin_dsn = _running_admin_dsn(home)
        password = home.role_passwords([ACD.name])[ACD.name]
        database_url = role_dsn(admin_dsn, ACD.service_schema(), password)
    return apply_file(path, database_url)


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    settings = load_cli_settings()
    admin_dsn = args.admin_url or _running_admin_dsn(Home(settings.home))
    projector = service("stats-projector")
    sources = [s.schema for s in SERVICES if s.name != projector.name]
    # The projector owns how its read models are rebuilt; the CLI only runs it.
    rebuild = importlib.import_module(f"{projector.package}.rebuild").rebuild
    report = asyncio.run(rebuild(admin_dsn, projector.schema, sources, projector.migrations_dir()))
    heads = ", ".join(f"{schema} at {position}" for schema, position in report.heads.items())
    print(
        f"{projector.name}: rebuilt from {report.events_read} events ({heads}) and swapped in: "
        + ", ".join(f"{table} {rows}" for table, rows in report.rows.items())
    )
    return EXIT_OK


def cmd_users(args: argparse.Namespace) -> int:
    if args.database_url:
        database_url = args.database_url
    else:
        home = Home(load_cli_settings().home)
        admin_dsn = _running_admin_dsn(home)
        password = home.role_passwords([ACCESS.name])[ACCESS.name]
        database_url = role_dsn(admin_dsn, ACCESS.service_schema(), password)
    # The access gateway owns its account rules; the CLI only runs its task.
    users = importlib.import_module(f"{ACCESS.package}.users")
    code: int = users.run(args, database_url)
    return code


def _add_database_target(command: argparse.ArgumentParser, admin_needs: str) -> None:
    """``--service`` and ``--admin-url``, shared by the commands that work on the schemas."""
    command.add_argument(
        "--service",
        metavar="NAME",
        help="only this service: " + ", ".join(s.name for s in SERVICES),
    )
    command.add_argument(
        "--admin-url",
        metavar="DSN",
        help=f"postgresql://USER:PASSWORD@HOST:PORT/DATABASE of a role that {admin_needs}",
    )


def cmd_verify_export(args: argparse.Namespace) -> int:
    return run_verify_export(args, load_cli_settings().home)


def cmd_backup(args: argparse.Namespace) -> int:
    home = Home(load_cli_settings().home)
    return backup.run_backup(args, home.root, lambda: _running_admin_dsn(home))


def cmd_restore(args: argparse.Namespace) -> int:
    return backup.run_restore(args, load_cli_settings().home)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plateau",
        description="Plateau, an event-sourced contact-centre platform.",
        epilog="Settings come from PLATEAU_* environment variables; see the README.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the embedded default (PostgreSQL, broker, services) until Ctrl-C",
        description="Start PostgreSQL, the broker and every service on this machine, with "
        "data under PLATEAU_HOME (.plateau/), and supervise them until Ctrl-C or SIGTERM.",
    )
    up.add_argument(
        "--no-services",
        action="store_true",
        help="start only PostgreSQL and the broker (for debugging a service by hand)",
    )
    up.set_defaults(handler=cmd_up)

    status = commands.add_parser(
        "status",
        help="check each part of the running embedded default",
        description="Probe PostgreSQL, the broker and each service's gRPC health. Exit 0 when "
        "all are healthy, 1 otherwise, 3 when nothing is running.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=cmd_status)

    migrate = commands.add_parser(
        "migrate",
        help="apply the services' database migrations",
        description="Create each service's schema and role and apply its pending migrations. "
        "Without --admin-url, targets the running embedded default. With it, the role "
        "passwords come from PLATEAU_<SERVICE>_DB_PASSWORD (or are generated into "
        "PLATEAU_HOME/secrets.json).",
    )
    _add_database_target(migrate, admin_needs="may create schemas and roles")
    migrate.set_defaults(handler=cmd_migrate)

    verify = commands.add_parser(
        "verify",
        help="recompute the services' event-store hash chains",
        description="Recompute each service's tamper-evident hash chain from its first event "
        "and report the head it reached, or the first broken position and why. Exit 0 when "
        "every chain is intact, 1 otherwise. Without --admin-url, on the running embedded "
        "default.",
    )
    _add_database_target(verify, admin_needs="may read every service's schema")
    verify.set_defaults(handler=cmd_verify)

    config = commands.add_parser(
        "config",
        help="configure tenants, queues, entry points, agents and pause codes",
        description="Declarative configuration of the acd.",
    )
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    apply = config_commands.add_parser(
        "apply",
        help="validate a configuration file and record what changed",
        description="Validate FILE (YAML) and record what differs from the configuration in "
        "force as events, as the next configuration version of each tenant in the file. "
        "Every problem is printed with its line and field, and then nothing is recorded "
        "(exit 2). Without --database-url, on the running embedded default.",
    )
    apply.add_argument("file", type=Path, metavar="FILE", help="the configuration file")
    apply.add_argument(
        "--database-url",
        metavar="DSN",
        help="postgresql://plateau_acd:PASSWORD@HOST:PORT/DATABASE of the acd's role",
    )
    apply.set_defaults(handler=cmd_config_apply)

    projections = commands.add_parser(
        "projections",
        help="manage the read models built from the event stores",
        description="Manage the read models the stats projector builds from the event stores.",
    )
    actions = projections.add_subparsers(dest="action", required=True, metavar="ACTION")
    rebuild = actions.add_parser(
        "rebuild",
        help="replay every event store into fresh read models and swap them in",
        description="Replay every service's event store into fresh read-model tables, then "
        "swap them in atomically (the running projector waits for the swap and goes on from "
        "the rebuilt checkpoints). Without --admin-url, on the running embedded default.",
    )
    rebuild.add_argument(
        "--admin-url",
        metavar="DSN",
        help="postgresql://USER:PASSWORD@HOST:PORT/DATABASE of a role that may read every "
        "service's schema and create schemas and roles",
    )
    rebuild.set_defaults(handler=cmd_projections_rebuild)
    _add_users_commands(commands)
    campaigns.register(commands)
    dnc.register(commands)
    demo.register(commands)
    add_verify_export(commands, cmd_verify_export)
    backup.add_parsers(commands, cmd_backup, cmd_restore)
    return parser


def _add_users_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser(
        "users",
        help="manage the access gateway's users",
        description="Users of the access gateway (the client's web and API access). Without "
        "--database-url, on the running embedded default. Every change is audited.",
    )
    users.add_argument(
        "--database-url",
        metavar="DSN",
        help="postgresql://plateau_access_gateway:PASSWORD@HOST:PORT/DATABASE "
        "of the gateway's role",
    )
    actions = users.add_subparsers(dest="command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="create a user",
        description="Create a user of TENANT. The initial password is generated and printed "
        "once, or read from stdin (one line) with --password-stdin; it must pass the "
        "password policy. Client users enrol a TOTP second factor at their first login.",
    )
    add.add_argument("--tenant", required=True, help="tenant (client account) of the user")
    add.add_argument("--username", required=True, help="login name, unique in the installation")
    add.add_argument(
        "--role",
        required=True,
        choices=["client_analyst", "client_supervisor", "operator_admin"],
        help="what the user may do",
    )
    add.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="Q",
        help="a queue the user may see (repeat; none: every queue of the tenant)",
    )
    add.add_argument(
        "--campaign",
        action="append",
        default=[],
        metavar="C",
        help="a campaign the user may see (repeat; none: every campaign of the tenant)",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the initial password from stdin"
    )
    listing = actions.add_parser("list", help="list users", description="List users.")
    listing.add_argument("--tenant", help="only this tenant's users")
    unlock = actions.add_parser(
        "unlock",
        help="lift a lockout after failed logins",
        description="Lift the lockout of USERNAME after repeated failed logins.",
    )
    unlock.add_argument("username", metavar="USERNAME")
    users.set_defaults(handler=cmd_users)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _crash_log(exc: BaseException) -> Path:
    """Write the traceback of an unexpected error where the user can find it."""
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    report = f"{stamp} plateau {' '.join(sys.argv[1:])}\n" + "".join(
        traceback.format_exception(exc)
    )
    home = Path(os.environ.get("PLATEAU_HOME") or ".plateau").expanduser().absolute()
    for directory in (home / "logs", Path(tempfile.gettempdir())):
        path = directory / "plateau-crash.log"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(report + "\n")
            return path
        except OSError:
            continue
    return Path("(nowhere: no writable directory)")


def _report(exc: PlateauError) -> int:
    """Print a PlateauError the way its kind deserves; its exit status."""
    message = _one_line(str(exc))
    if isinstance(exc, NotRunningError | StartingError):
        print(message)  # an answer about the state of things, not a failure of the command
        return EXIT_NOT_RUNNING if isinstance(exc, NotRunningError) else EXIT_FAILED
    if isinstance(exc, AlreadyRunningError):
        print(message, file=sys.stderr)
        return EXIT_FAILED
    print(f"plateau: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plateau`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except PlateauError as exc:
        return _report(exc)
    except (KeyboardInterrupt, Interrupted):
        return 130
    except Exception as exc:
        path = _crash_log(exc)
        summary = _one_line(f"{exc.__class__.__name__}: {exc}")
        print(
            f"plateau: unexpected error: {summary} — the traceback is in {path}; "
            "please report it with that file",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
