"""``plateau backup`` and ``plateau restore``: an encrypted archive of every event store and
the configuration, and its restore into an empty installation (docs/backup.md).

What goes in: every service's event store (``events``, read in one ``REPEATABLE READ``
snapshot of the database, so all stores are taken at one instant), the services' own state
that is not rebuilt from their events (the access gateway's users and API tokens, the
dialer's contact lists, do-not-call list and dial plans, the gateway's allow-list facts,
the projector's tenant settings) with the consumer checkpoints written in the same
transactions as that state, and the configuration files of PLATEAU_HOME (certificate,
export-signing key, SIP extension and demo passwords). What stays out: the read models
(rebuilt from the stores), the relays' positions (a restored installation's bus is empty:
the relays republish every event and the consumers skip what their checkpoints say they
applied, as at every ``plateau up``), login sessions, lockout counters, database role
passwords and the PostgreSQL cluster itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import importlib.metadata
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg

from plateau_cli.backup_archive import (
    BEGIN,
    DATA,
    END,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    KeyMaterial,
    Record,
    check_archive,
)
from plateau_cli.home import AlreadyRunningError, Home
from plateau_cli.provision import (
    DATABASE,
    admin_connect,
    ensure_database,
    migrate_services,
    with_database,
    without_password,
)
from plateau_runtime.embedded import EmbeddedPostgres, free_port
from plateau_runtime.errors import PlateauError
from plateau_runtime.eventstore import EventStore
from plateau_runtime.services import SERVICES, service

SUFFIX = ".plateau-backup"
KEY_VARIABLE = "PLATEAU_BACKUP_KEY"
_NAME = re.compile(r"^plateau-\d{8}T\d{6}\.\d{6}Z" + re.escape(SUFFIX) + "$")

#: Tables never archived: the relays' positions (the restored bus is empty, see the module
#: docstring) and the migration records (the target is migrated by its own code).
_NEVER = frozenset({"relay_positions", "schema_migrations"})
#: Per schema, tables left out because they are derived or short-lived.
_LEFT_OUT: dict[str, frozenset[str]] = {
    # Logins end with a restore (users log in again); lockout counters start afresh.
    "access_gateway": frozenset({"sessions", "source_failures"}),
    # Which gateway replica holds a live call, and live registrations: none survive a restore.
    "sip_gateway": frozenset({"call_owners", "bindings"}),
}
#: The stats projector's schema holds read models, rebuilt at restore; only its
#: configuration is kept.
_ONLY: dict[str, frozenset[str]] = {"stats_projector": frozenset({"tenant_settings"})}
#: PLATEAU_HOME entries that are not configuration.
_HOME_LEFT_OUT = frozenset({"pg", "logs", "state.json", "up.lock", "secrets.json", "backups"})


def _archived(schema: str, table: str) -> bool:
    if table in _NEVER or table in _LEFT_OUT.get(schema, frozenset()):
        return False
    only = _ONLY.get(schema)
    return only is None or table in only


def key_material(key_file: Path | None) -> KeyMaterial:
    """The key from ``--key-file``, else the passphrase in PLATEAU_BACKUP_KEY."""
    if key_file is not None:
        return KeyMaterial.from_key_file(key_file)
    passphrase = os.environ.get(KEY_VARIABLE, "")
    if not passphrase:
        raise PlateauError(
            "no backup key given",
            f"pass --key-file FILE (32 random bytes) or set {KEY_VARIABLE} to a passphrase",
        )
    return KeyMaterial.from_passphrase(passphrase)


# -- backup --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: list[str]

    @property
    def member(self) -> str:
        return f"db/{self.schema}/{self.name}"


async def _tables(conn: asyncpg.Connection, schema: str) -> list[Table]:
    """The archived tables of ``schema``, parents before the tables referring to them."""
    rows = await conn.fetch(
        "select c.relname, array_agg(a.attname order by a.attnum) as columns "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped "
        "and a.attgenerated = '' "
        "where n.nspname = $1 and c.relkind in ('r', 'p') group by c.relname order by c.relname",
        schema,
    )
    parents: dict[str, set[str]] = {}
    for row in await conn.fetch(
        "select c.relname as child, p.relname as parent from pg_constraint k "
        "join pg_class c on c.oid = k.conrelid join pg_class p on p.oid = k.confrelid "
        "join pg_namespace n on n.oid = k.connamespace where k.contype = 'f' and n.nspname = $1",
        schema,
    ):
        parents.setdefault(row["child"], set()).add(row["parent"])
    tables = {r["relname"]: Table(schema, r["relname"], list(r["columns"])) for r in rows}
    ordered: list[Table] = []
    placed: set[str] = set()
    while len(placed) < len(tables):
        ready = [
            name
            for name in sorted(tables)
            if name not in placed and parents.get(name, set()) <= placed | {name}
        ]
        if not ready:  # a cycle: keep the rest in name order
            ready = [name for name in sorted(tables) if name not in placed]
        for name in ready:
            placed.add(name)
            ordered.append(tables[name])
    return [t for t in ordered if _archived(schema, t.name)]


async def _schemas(conn: asyncpg.Connection) -> list[str]:
    present = {
        r["nspname"]
        for r in await conn.fetch(
            "select nspname from pg_namespace where nspname = any($1::text[])",
            [s.schema for s in SERVICES],
        )
    }
    return [s.schema for s in SERVICES if s.schema in present]


async def _migrations(conn: asyncpg.Connection, schema: str) -> list[list[Any]]:
    if not await conn.fetchval("select to_regclass($1)", f"{schema}.schema_migrations"):
        return []
    rows = await conn.fetch(
        f"select source, version, checksum from {schema}.schema_migrations order by 1, 2"
    )
    return [[r["source"], r["version"], r["checksum"]] for r in rows]


def _home_files(root: Path, exclude: Path | None) -> Iterator[Path]:
    """The configuration files of a home: everything but data, logs, state and locks."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in _HOME_LEFT_OUT or any(p.startswith(".") for p in relative.parts):
            continue
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        if path.is_file() and not path.is_symlink() and not path.name.endswith(SUFFIX):
            yield path


def _archive_path(output: Path | None) -> tuple[Path, Path | None]:
    """Where the archive goes, and the directory whose archives ``--keep`` prunes."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = f"plateau-{stamp}{SUFFIX}"
    if output is None:
        return Path.cwd() / name, Path.cwd()
    if output.is_dir() or str(output).endswith(os.sep):
        output.mkdir(parents=True, exist_ok=True)
        return output / name, output
    return output, None


async def write_backup(
    admin_dsn: str, home: Path | None, material: KeyMaterial, target: Path
) -> dict[str, Any]:
    """Write the archive to ``target`` (through a temporary name); its manifest."""
    partial = target.with_name(f".{target.name}.partial")
    conn = await admin_connect(admin_dsn)
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            writer = ArchiveWriter(out, material)
            manifest = await _write_members(conn, writer, home, target.parent)
            manifest["database"] = without_password(admin_dsn)
            writer.finish(manifest)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        return manifest
    finally:
        partial.unlink(missing_ok=True)
        await conn.close()


async def _write_members(
    conn: asyncpg.Connection, writer: ArchiveWriter, home: Path | None, output_dir: Path
) -> dict[str, Any]:
    stores: dict[str, Any] = {}
    tables: list[dict[str, Any]] = []
    migrations: dict[str, Any] = {}
    # One snapshot for every schema: all stores, and the state written with them, are read
    # as of one instant while the services go on appending.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot_at = await conn.fetchval("select now()")
        for schema in await _schemas(conn):
            migrations[schema] = await _migrations(conn, schema)
            for table in await _tables(conn, schema):
                order = " order by position" if table.name == "events" else ""
                columns = ", ".join(f'"{c}"' for c in table.columns)
                rows = await conn.fetchval(f"select count(*) from {schema}.{table.name}")
                writer.begin(table.member, kind="table", schema=schema, table=table.name)

                async def sink(data: bytes) -> None:
                    writer.write(data)

                await conn.copy_from_query(
                    f"select {columns} from {schema}.{table.name}{order}",
                    output=sink,
                    format="binary",
                )
                summary = writer.end()
                tables.append(
                    {
                        "member": table.member,
                        "schema": schema,
                        "table": table.name,
                        "columns": table.columns,
                        "rows": rows,
                        **summary,
                    }
                )
                if table.name == "events":
                    head = await conn.fetchrow(
                        f"select position, hash from {schema}.events order by position desc limit 1"
                    )
                    stores[schema] = {
                        "events": rows,
                        "last_position": head["position"] if head else 0,
                        "head_hash": bytes(head["hash"]).hex() if head else bytes(32).hex(),
                    }
    files: list[dict[str, Any]] = []
    if home is not None:
        for path in _home_files(home, output_dir if home in output_dir.parents else None):
            relative = path.relative_to(home).as_posix()
            writer.begin(f"home/{relative}", kind="file")
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    writer.write(block)
            summary = writer.end()
            files.append(
                {
                    "member": f"home/{relative}",
                    "path": relative,
                    "mode": path.stat().st_mode & 0o777,
                    **summary,
                }
            )
    return {
        "plateau_version": _plateau_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "snapshot_at": snapshot_at.isoformat(),
        "stores": stores,
        "tables": tables,
        "files": files,
        "migrations": migrations,
    }


def _plateau_version() -> str:
    try:
        return importlib.metadata.version("plateau")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest archives of ``directory``; the deleted paths.

    Only files named as ``plateau backup`` names them are considered; their names carry the
    UTC time they were made, so name order is age order."""
    archives = sorted(p for p in directory.iterdir() if _NAME.match(p.name) and p.is_file())
    doomed = archives[: max(0, len(archives) - keep)]
    for path in doomed:
        path.unlink()
    return doomed


# -- restore -------------------------------------------------------------------------------


class TargetNotEmptyError(PlateauError):
    """The installation to restore into already holds data."""


async def _target_contents(
    conn: asyncpg.Connection, manifest: dict[str, Any], home: Path
) -> list[str]:
    found: list[str] = []
    for table in manifest["tables"]:
        name = f"{table['schema']}.{table['table']}"
        if await conn.fetchval("select to_regclass($1)", name) is None:
            continue
        if await conn.fetchval(f"select exists (select 1 from {name})"):
            found.append(f"{name} has rows")
    found += [
        f"{home / f['path']} exists" for f in manifest["files"] if (home / f["path"]).exists()
    ]
    return found


async def _load(
    conn: asyncpg.Connection, archive: Path, material: KeyMaterial, manifest: dict[str, Any]
) -> None:
    """Copy every table of the archive in; each member is checked against the manifest."""
    tables = {t["member"]: t for t in manifest["tables"]}
    with archive.open("rb") as source:
        records = ArchiveReader(source, material, str(archive)).records()
        for record in records:
            if record.kind != BEGIN:
                continue
            name = str(record.json()["name"])
            if name not in tables:
                _skip_member(records)
                continue
            table = tables[name]
            digest = hashlib.sha256()
            await conn.copy_to_table(
                table["table"],
                schema_name=table["schema"],
                columns=table["columns"],
                source=_member_data(records, digest),
                format="binary",
            )
            if digest.hexdigest() != table["sha256"]:
                raise ArchiveError(
                    f"{archive}: member {name} changed since it was checked",
                    "nothing was restored; make sure nothing writes the archive meanwhile",
                )


async def _member_data(records: Iterator[Record], digest: Any) -> AsyncIterator[bytes]:
    for record in records:
        if record.kind == DATA:
            digest.update(record.payload)
            yield record.payload
        elif record.kind == END:
            return


def _skip_member(records: Iterator[Record]) -> None:
    for record in records:
        if record.kind == END:
            return


def _files(
    archive: Path, material: KeyMaterial, manifest: dict[str, Any], home: Path
) -> list[Path]:
    """Write the home's files under temporary names next to their places; those names."""
    files = {f["member"]: f for f in manifest["files"]}
    written: list[Path] = []
    with archive.open("rb") as source:
        records = ArchiveReader(source, material, str(archive)).records()
        current: Any = None
        for record in records:
            if record.kind == BEGIN:
                entry = files.get(str(record.json()["name"]))
                if entry is None:
                    continue
                path = home / entry["path"]
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                temporary = path.with_name(f".{path.name}.restoring")
                current = os.fdopen(
                    os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, entry["mode"]), "wb"
                )
                written.append(temporary)
            elif record.kind == DATA and current is not None:
                current.write(record.payload)
            elif record.kind == END and current is not None:
                current.close()
                current = None
    return written


async def _check_migrations(conn: asyncpg.Connection, manifest: dict[str, Any]) -> None:
    for schema, applied in manifest["migrations"].items():
        here = await _migrations(conn, schema)
        if here != applied:
            raise PlateauError(
                f"the target's {schema} schema is not at the archive's migrations "
                f"({len(here)} applied here, {len(applied)} in the archive)",
                f"restore with the Plateau release that made the archive "
                f"({manifest['plateau_version']}), then upgrade; without --admin-url, "
                "plateau restore migrates an empty target itself",
            )


async def _verify_against_manifest(conn: asyncpg.Connection, manifest: dict[str, Any]) -> None:
    for schema, expected in manifest["stores"].items():
        # The connection stands in for the pool: verify reads on it, inside the transaction.
        report = await EventStore(cast(asyncpg.Pool, conn), schema).verify(conn)
        if not report.intact:
            raise ArchiveError(
                f"the {schema} store's chain is broken at position "
                f"{report.first_broken_position} after loading: {report.problem}",
                "nothing was restored; the archive was made from a store whose chain was "
                "already broken (check it with plateau verify)",
            )
        got = (report.events_checked, report.head_position, report.head_hash)
        want = (expected["events"], expected["last_position"], expected["head_hash"])
        if got != want:
            raise ArchiveError(
                f"the {schema} store does not match the manifest after loading "
                f"(events, last position, head: {got} instead of {want})",
                "nothing was restored",
            )


async def restore_into(
    admin_dsn: str, archive: Path, material: KeyMaterial, manifest: dict[str, Any], home: Path
) -> None:
    """Load the archive into the migrated, empty database of ``admin_dsn`` and the home."""
    conn = await admin_connect(admin_dsn)
    temporaries: list[Path] = []
    try:
        await _check_migrations(conn, manifest)
        async with conn.transaction():
            await _load(conn, archive, material, manifest)
            await _verify_against_manifest(conn, manifest)
            temporaries = _files(archive, material, manifest, home)
        for temporary in temporaries:
            os.replace(temporary, temporary.with_name(temporary.name[1 : -len(".restoring")]))
        temporaries = []
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        await conn.close()


def rebuild_projections(admin_dsn: str) -> str:
    """Rebuild the read models from the restored stores (``plateau projections rebuild``)."""
    projector = service("stats-projector")
    sources = [s.schema for s in SERVICES if s.name != projector.name]
    rebuild = importlib.import_module(f"{projector.package}.rebuild").rebuild
    report = asyncio.run(rebuild(admin_dsn, projector.schema, sources, projector.migrations_dir()))
    return f"read models rebuilt from {report.events_read} events"


# -- commands ------------------------------------------------------------------------------


def run_backup(args: argparse.Namespace, home: Path, admin_dsn: Callable[[], str]) -> int:
    material = key_material(args.key_file)
    if args.keep is not None and args.keep < 1:
        raise PlateauError("--keep must be at least 1", "say how many archives to keep")
    target, directory = _archive_path(args.output)
    if args.keep is not None and directory is None:
        raise PlateauError(
            "--keep needs --output to be a directory", "give the directory the archives go to"
        )
    dsn = args.admin_url or admin_dsn()
    manifest = asyncio.run(
        write_backup(dsn, home if home.is_dir() else None, material, target.absolute())
    )
    stores = ", ".join(
        f"{schema} {s['events']} events (head {s['last_position']})"
        for schema, s in manifest["stores"].items()
    )
    print(f"backup written to {target}: {stores}; {len(manifest['files'])} configuration files")
    if args.keep is not None and directory is not None:
        for path in prune(directory, args.keep):
            print(f"removed older backup {path}")
    return 0


def run_restore(args: argparse.Namespace, home_root: Path) -> int:
    material = key_material(args.key_file)
    archive: Path = args.archive
    if not archive.is_file():
        raise PlateauError(f"{archive} is not a file", "give the path of a backup archive")
    # Everything is authenticated before anything is written.
    with archive.open("rb") as source:
        manifest = check_archive(source, material, str(archive))
    print(
        f"{archive}: authenticated, made {manifest['created_at']} by Plateau "
        f"{manifest['plateau_version']}"
    )
    home = Home(home_root)
    if args.admin_url:
        _restore(args.admin_url, archive, material, manifest, home_root, migrate=None)
        return 0
    try:
        lock = home.acquire_lock()
    except AlreadyRunningError as exc:
        raise PlateauError(
            f"Plateau is running from {home_root} ({exc})",
            "a restore goes into a stopped, empty installation: stop it, then restore into "
            "a new PLATEAU_HOME",
        ) from None
    with lock:
        postgres = EmbeddedPostgres(home.pg_data, free_port())
        postgres.start()
        try:
            server_dsn = postgres.admin_dsn
            asyncio.run(ensure_database(server_dsn))

            def migrate(dsn: str) -> None:
                passwords = home.role_passwords(s.name for s in SERVICES)
                asyncio.run(migrate_services(dsn, SERVICES, passwords))

            _restore(
                with_database(server_dsn, DATABASE),
                archive,
                material,
                manifest,
                home_root,
                migrate=migrate,
            )
        finally:
            postgres.stop()
    return 0


def _restore(
    admin_dsn: str,
    archive: Path,
    material: KeyMaterial,
    manifest: dict[str, Any],
    home: Path,
    *,
    migrate: Callable[[str], None] | None,
) -> None:
    async def contents() -> list[str]:
        conn = await admin_connect(admin_dsn)
        try:
            return await _target_contents(conn, manifest, home)
        finally:
            await conn.close()

    found = asyncio.run(contents())
    if found:
        raise TargetNotEmptyError(
            "the target installation is not empty: "
            + "; ".join(found[:6])
            + (f" (and {len(found) - 6} more)" if len(found) > 6 else ""),
            "restore into an empty installation (a new PLATEAU_HOME); nothing was changed",
        )
    if migrate is not None:
        migrate(admin_dsn)
    began = time.monotonic()
    asyncio.run(restore_into(admin_dsn, archive, material, manifest, home))
    stores = ", ".join(
        f"{schema} {s['events']} events (head {s['last_position']}, chain intact)"
        for schema, s in manifest["stores"].items()
    )
    print(
        f"restored {stores}; {len(manifest['files'])} configuration files "
        f"({time.monotonic() - began:.1f} s)"
    )
    began = time.monotonic()
    print(f"{rebuild_projections(admin_dsn)} ({time.monotonic() - began:.1f} s)")
    print(
        "at their next start the relays republish every event to the empty bus and the "
        "consumers skip what they had applied; start the platform (plateau up) now"
    )


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    backup_handler: Callable[[argparse.Namespace], int],
    restore_handler: Callable[[argparse.Namespace], int],
) -> None:
    """``plateau backup`` and ``plateau restore``."""
    key_help = (
        f"file of the 32-byte key (raw, hex or base64); without it, the passphrase in "
        f"{KEY_VARIABLE} (scrypt)"
    )
    backup = commands.add_parser(
        "backup",
        help="write an encrypted archive of every event store and the configuration",
        description="Write an encrypted, authenticated archive (AES-256-GCM) of every service's "
        "event store, read in one snapshot while the platform runs, the services' own state "
        "and PLATEAU_HOME's configuration files, with a manifest of each store's chain head. "
        "Read models are not archived: restore rebuilds them. See docs/backup.md.",
    )
    backup.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="archive file, or a directory for plateau-<UTC time>.plateau-backup "
        "(default: the current directory)",
    )
    backup.add_argument("--key-file", type=Path, metavar="FILE", help=key_help)
    backup.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="after writing, keep only the N newest archives of the --output directory",
    )
    backup.add_argument(
        "--admin-url",
        metavar="DSN",
        help="postgresql://USER:PASSWORD@HOST:PORT/DATABASE of a role that may read every "
        "service's schema (default: the running embedded default)",
    )
    backup.set_defaults(handler=backup_handler)

    restore = commands.add_parser(
        "restore",
        help="restore an archive into an empty installation",
        description="Authenticate the whole archive, then load it into an empty installation "
        "(a new PLATEAU_HOME, Plateau stopped): every store with its positions and hashes, "
        "each chain verified against the manifest, then the configuration files, then the "
        "read models rebuilt. A wrong key, a damaged or truncated archive, or a target that "
        "holds data is refused before anything is written. See docs/backup.md.",
    )
    restore.add_argument("archive", type=Path, metavar="ARCHIVE", help="the backup archive")
    restore.add_argument("--key-file", type=Path, metavar="FILE", help=key_help)
    restore.add_argument(
        "--admin-url",
        metavar="DSN",
        help="restore into this database (already migrated with plateau migrate, empty) "
        "instead of the embedded default's; configuration files still go to PLATEAU_HOME",
    )
    restore.set_defaults(handler=restore_handler)
