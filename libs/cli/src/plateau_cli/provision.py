"""The database side of ``plateau up`` and ``plateau migrate``: the ``plateau`` database,
each service's schema and role, and their migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from plateau_runtime.db import connect, create_pool
from plateau_runtime.errors import DependencyUnavailableError, PlateauError
from plateau_runtime.eventstore import ChainReport, EventStore
from plateau_runtime.migrations import Migration, migrate, role_dsn
from plateau_runtime.services import ServiceSpec

#: The database of the embedded default; every service has its own schema in it.
DATABASE = "plateau"
CONNECT_TIMEOUT = 10.0


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def without_password(dsn: str) -> str:
    """``dsn`` safe to print or store: the password is left out."""
    parts = urlsplit(dsn)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def admin_connect(dsn: str) -> asyncpg.Connection:
    """An administrative connection, or a ``PlateauError`` saying where and why not."""
    where = without_password(dsn)
    if urlsplit(dsn).scheme not in {"postgresql", "postgres"}:
        raise PlateauError(
            f"{where!r} is not a PostgreSQL URL",
            "give one like postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    try:
        return await asyncio.wait_for(connect(dsn), CONNECT_TIMEOUT)
    except TimeoutError:
        raise DependencyUnavailableError(
            f"PostgreSQL at {where} did not answer within {CONNECT_TIMEOUT:.0f} s",
            "check the host and port, and that PostgreSQL is running",
        ) from None
    except asyncpg.InvalidPasswordError:
        raise DependencyUnavailableError(
            f"PostgreSQL at {where} refused the password", "check the credentials in the URL"
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise DependencyUnavailableError(
            f"the database of {where} does not exist", "create it or fix the URL"
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise DependencyUnavailableError(
            f"cannot connect to PostgreSQL at {where}: {exc}", "check the URL and the server"
        ) from None


async def ensure_database(admin_dsn: str, database: str = DATABASE) -> bool:
    """Create ``database`` on the server of ``admin_dsn`` if missing; whether it was created."""
    conn = await admin_connect(admin_dsn)
    try:
        if await conn.fetchval("select 1 from pg_database where datname = $1", database):
            return False
        # The name is our constant; identifiers cannot be bound as parameters.
        await conn.execute(f'create database "{database}"')
        return True
    finally:
        await conn.close()


@dataclass(frozen=True)
class Migrated:
    """What ``migrate`` did for one service."""

    service: ServiceSpec
    applied: list[Migration]
    dsn: str  # the service role's DSN, with its password


async def migrate_services(
    admin_dsn: str, services: Iterable[ServiceSpec], passwords: Mapping[str, str]
) -> list[Migrated]:
    """Apply every pending migration of each service, in order, as the administrative role."""
    conn = await admin_connect(admin_dsn)
    done: list[Migrated] = []
    try:
        for spec in services:
            schema = spec.service_schema()
            try:
                applied = await migrate(conn, schema, passwords[spec.name])
            except asyncpg.PostgresError as exc:
                raise PlateauError(
                    f"migrating {spec.name} failed: {exc}",
                    "check that the admin URL's role may create schemas and roles",
                ) from None
            done.append(Migrated(spec, applied, role_dsn(admin_dsn, schema, passwords[spec.name])))
    finally:
        await conn.close()
    return done


async def republish_to_fresh_broker(admin_dsn: str, services: Iterable[ServiceSpec]) -> int:
    """Make every outbox relay start again from the first event; return how many were reset.

    The embedded broker keeps topics in memory, so each ``plateau up`` starts with an empty
    bus. The event stores are the durable truth: replaying them whole rebuilds the bus, and
    consumers skip what they already applied (their checkpoints live in PostgreSQL).
    """
    conn = await admin_connect(admin_dsn)
    reset = 0
    try:
        for spec in services:
            status = await conn.execute(f"delete from {spec.schema}.relay_positions")
            reset += int(status.split()[-1])
    finally:
        await conn.close()
    return reset


async def verify_chains(
    admin_dsn: str, services: Iterable[ServiceSpec]
) -> list[tuple[ServiceSpec, ChainReport]]:
    """Each service's hash-chain report, read with an administrative role."""
    pool = await create_pool(admin_dsn, max_size=2)
    try:
        return [(spec, await EventStore(pool, spec.schema).verify()) for spec in services]
    finally:
        await pool.close()
