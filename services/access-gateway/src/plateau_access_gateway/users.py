"""Operators' account tasks, run by ``plateau users`` (or ``python -m
plateau_access_gateway.users``): add a user, list users, lift a lockout, and create the
embedded default's demo users.

They work on the gateway's own schema through its role (``PLATEAU_DATABASE_URL``), and
record what they do in its audit trail like the API does (created by ``cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from plateau_access_gateway.adapters.accounts import UsernameTakenError
from plateau_access_gateway.bootstrap import SPEC, access_service
from plateau_access_gateway.domain.accounts import Account
from plateau_access_gateway.domain.passwords import WeakPasswordError
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.handlers import AccessService
from plateau_runtime.db import create_pool
from plateau_runtime.errors import ConfigurationError, PlateauError
from plateau_runtime.eventstore import EventStore

CREATED_BY = "cli"
DEMO_TENANT = "demo"  # the acd's shipped demo tenant
OPERATOR_TENANT = "operator"  # the contact centre's own administrators
DEMO_USERS = (
    ("demo.admin", OPERATOR_TENANT, Role.OPERATOR_ADMIN),
    ("demo.supervisor", DEMO_TENANT, Role.CLIENT_SUPERVISOR),
)


class UserTaskError(PlateauError):
    """An account task was refused (weak password, taken name, unknown user)."""


@asynccontextmanager
async def _service(database_url: str) -> AsyncIterator[AccessService]:
    pool = await create_pool(database_url, max_size=2)
    try:
        yield access_service(pool, EventStore(pool, SPEC.schema))
    finally:
        await pool.close()


async def add_user(
    database_url: str,
    *,
    tenant: str,
    username: str,
    role: Role,
    queue_ids: Sequence[str] = (),
    campaign_ids: Sequence[str] = (),
    password: str | None = None,
) -> tuple[Account, str]:
    """Create a user; with no password, a generated one (returned, to show once)."""
    async with _service(database_url) as service:
        try:
            return await service.create_user(
                tenant=tenant,
                username=username,
                role=role,
                password=password,
                queue_ids=queue_ids,
                campaign_ids=campaign_ids,
                created_by=CREATED_BY,
            )
        except WeakPasswordError as exc:
            raise UserTaskError(f"password refused: {exc}", "choose a stronger one") from None
        except UsernameTakenError as exc:
            raise UserTaskError(str(exc), "plateau users list shows who exists") from None


async def list_users(database_url: str, tenant: str | None = None) -> list[Account]:
    async with _service(database_url) as service:
        return await service.repository.accounts(tenant)


async def unlock_user(database_url: str, username: str) -> Account:
    """Lift the lockout of ``username`` after failed logins."""
    async with _service(database_url) as service:
        found = await service.repository.by_username(username)
        if found is None:
            raise UserTaskError(f"no user {username!r}", "plateau users list shows who exists")
        return await service.unlock_account(found[0].user_id)


@dataclass(frozen=True)
class DemoLogin:
    username: str
    tenant: str
    role: Role
    password: str


def ensure_demo_users(database_url: str, credentials: Path) -> list[DemoLogin]:
    """The demo users, created once; their passwords are generated and kept in
    ``credentials`` (mode 0600), never in the repository."""
    kept: dict[str, str] = {}
    if credentials.is_file():
        kept = {u["username"]: u["password"] for u in json.loads(credentials.read_text())["users"]}
    logins = asyncio.run(_ensure_demo_users(database_url, kept))
    body = {"users": [{**vars(login), "role": login.role.value} for login in logins]}
    descriptor = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(body, indent=2) + "\n")
    credentials.chmod(0o600)
    return logins


async def _ensure_demo_users(database_url: str, kept: dict[str, str]) -> list[DemoLogin]:
    logins = []
    async with _service(database_url) as service:
        for username, tenant, role in DEMO_USERS:
            existing = await service.repository.by_username(username)
            if existing is not None and username not in kept:
                continue  # created before, its password no longer on file: leave it alone
            if existing is None:
                _, password = await service.create_user(
                    tenant=tenant,
                    username=username,
                    role=role,
                    password=kept.get(username),
                    created_by=CREATED_BY,
                )
            else:
                password = kept[username]
            logins.append(DemoLogin(username, tenant, role, password))
    return logins


def describe(account: Account) -> str:
    scope = ""
    if account.queue_ids:
        scope += " queues=" + ",".join(account.queue_ids)
    if account.campaign_ids:
        scope += " campaigns=" + ",".join(account.campaign_ids)
    lock = f" locked-until={account.locked_until.isoformat()}" if account.locked_until else ""
    totp = "totp" if account.totp_confirmed else "no-2fa"
    return f"{account.username}\t{account.tenant}\t{account.role.value}\t{totp}{scope}{lock}"


def read_password() -> str:
    """One line from stdin: the initial password, when the operator chose one."""
    line = sys.stdin.readline().rstrip("\n")
    if not line:
        raise ConfigurationError("no password on stdin", "pipe one line, or omit --password-stdin")
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plateau_access_gateway.users")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add")
    add.add_argument("--tenant", required=True)
    add.add_argument("--username", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--queue", action="append", default=[])
    add.add_argument("--campaign", action="append", default=[])
    add.add_argument("--password-stdin", action="store_true")
    listing = commands.add_parser("list")
    listing.add_argument("--tenant")
    unlock = commands.add_parser("unlock")
    unlock.add_argument("username")
    args = parser.parse_args(argv)
    database_url = os.environ.get("PLATEAU_DATABASE_URL", "")
    try:
        return run(args, database_url)
    except PlateauError as exc:
        print(f"plateau users: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, database_url: str) -> int:
    """Carry out a parsed ``users`` command (shared with ``plateau users``)."""
    if args.command == "add":
        chosen = read_password() if args.password_stdin else None
        account, password = asyncio.run(
            add_user(
                database_url,
                tenant=args.tenant,
                username=args.username,
                role=Role(args.role),
                queue_ids=args.queue,
                campaign_ids=args.campaign,
                password=chosen,
            )
        )
        print(f"created {describe(account)}")
        if chosen is None:
            print(f"initial password (shown once): {password}")
        if account.needs_second_factor():
            print("the first login enrols a TOTP second factor (an authenticator app)")
    elif args.command == "list":
        for account in asyncio.run(list_users(database_url, args.tenant)):
            print(describe(account))
    else:
        account = asyncio.run(unlock_user(database_url, args.username))
        print(f"unlocked {account.username}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
