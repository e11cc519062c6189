"""Plain numbered SQL migrations, one schema and one least-privilege role per service.

Every service's schema gets the runtime's migrations (the event store) first, then the
service's own ``migrations/NNNN_name.sql``. Migrations run as an administrative role; the
service itself connects as ``plateau_<schema>``, which can use only its own schema and can
only read and append its event store, never rewrite it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from plateau_runtime.db import Connection
from plateau_runtime.errors import PlateauError

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
#: Tables the service role may read and append to but never update or delete.
APPEND_ONLY_TABLES = ("events",)


class MigrationError(PlateauError):
    """A migration file is malformed or failed to apply."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    source: str  # "runtime" or the service name
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class ServiceSchema:
    """Where a service keeps its data and as whom it connects."""

    schema: str
    migrations_dir: Path | None

    def __post_init__(self) -> None:
        if not _IDENT.match(self.schema):
            raise MigrationError(
                f"invalid schema name {self.schema!r}",
                "use lower-case letters, digits and underscores",
            )

    @property
    def role(self) -> str:
        return f"plateau_{self.schema}"


def discover(directory: Path, source: str) -> list[Migration]:
    """The migrations of a directory in version order; malformed names are errors."""
    found: list[Migration] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise MigrationError(
                f"migration file {path.name!r} is not named NNNN_name.sql",
                "rename it, e.g. 0002_add_queues.sql",
            )
        found.append(Migration(source, int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(
            f"two migrations in {directory} share a number", "renumber one of them"
        )
    return found


async def migrate(admin: Connection, service: ServiceSchema, role_password: str) -> list[Migration]:
    """Create the schema and role if needed, apply pending migrations, grant least privilege.

    Safe to run concurrently and repeatedly: a transaction-scoped advisory lock serialises
    runners, and applied migrations are recorded with their checksum (an edited applied
    migration is refused rather than silently diverging).
    """
    schema, role = service.schema, service.role
    pending: list[Migration] = []
    async with admin.transaction():
        await admin.execute("select pg_advisory_xact_lock(hashtext('plateau.migrations'))")
        exists = await admin.fetchval("select 1 from pg_roles where rolname = $1", role)
        verb = "alter" if exists else "create"
        # Identifiers are validated above; the password is a literal, so quote it safely.
        quoted_pw = await admin.fetchval("select quote_literal($1)", role_password)
        await admin.execute(
            f"{verb} role {role} login password {quoted_pw} "
            "nosuperuser nocreatedb nocreaterole noinherit"
        )
        await admin.execute(f"create schema if not exists {schema}")
        await admin.execute(f"revoke all on schema {schema} from public")
        await admin.execute(f"grant usage on schema {schema} to {role}")
        await admin.execute(f"alter role {role} set search_path = {schema}")
        await admin.execute(
            f"create table if not exists {schema}.schema_migrations ("
            "source text not null, version integer not null, name text not null, "
            "checksum text not null, applied_at timestamptz not null default now(), "
            "primary key (source, version))"
        )
        applied = {
            (r["source"], r["version"]): r["checksum"]
            for r in await admin.fetch(
                f"select source, version, checksum from {schema}.schema_migrations"
            )
        }
        candidates = discover(RUNTIME_MIGRATIONS, "runtime")
        if service.migrations_dir is not None:
            candidates += discover(service.migrations_dir, schema)
        for migration in candidates:
            key = (migration.source, migration.version)
            if key in applied:
                if applied[key] != migration.checksum:
                    raise MigrationError(
                        f"applied migration {migration.source}/{migration.version:04d}_"
                        f"{migration.name} was edited afterwards",
                        "restore the original file and add a new numbered migration instead",
                    )
                continue
            pending.append(migration)
        await admin.execute(f"set local search_path = {schema}")
        for migration in pending:
            try:
                await admin.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.source}/{migration.version:04d}_{migration.name} "
                    f"failed: {exc}",
                    "fix the SQL; nothing of it was applied",
                ) from None
            await admin.execute(
                f"insert into {schema}.schema_migrations (source, version, name, checksum) "
                "values ($1, $2, $3, $4)",
                migration.source,
                migration.version,
                migration.name,
                migration.checksum,
            )
        await admin.execute(
            f"grant select, insert, update, delete on all tables in schema {schema} to {role}"
        )
        await admin.execute(f"grant usage, select on all sequences in schema {schema} to {role}")
        for table in APPEND_ONLY_TABLES:
            await admin.execute(f"revoke update, delete, truncate on {schema}.{table} from {role}")
        await admin.execute(
            f"revoke insert, update, delete on {schema}.schema_migrations from {role}"
        )
    return pending


def role_dsn(admin_dsn: str, service: ServiceSchema, password: str) -> str:
    """The DSN of the service role on the same server and database as ``admin_dsn``."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(admin_dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{service.role}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
