"""Backup and restore against real PostgreSQL: stores come back with positions, versions
and hashes exactly, derived tables stay out, and a load whose chains do not match the
manifest is rolled back whole."""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import asyncpg
import pytest

from plateau_cli.backup import restore_into, write_backup
from plateau_cli.backup_archive import (
    BEGIN,
    DATA,
    END,
    MANIFEST,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    KeyMaterial,
    check_archive,
)
from plateau_cli.provision import ensure_database, migrate_services, with_database
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore
from plateau_runtime.services import SERVICES
from plateau_runtime.testing import offered_call

pytestmark = pytest.mark.integration

KEY = KeyMaterial(bytes(range(32)), "key-file")
PASSWORDS = {s.name: secrets.token_urlsafe(16) for s in SERVICES}


async def _database(admin_dsn: str) -> str:
    name = f"backup_{secrets.token_hex(4)}"
    await ensure_database(admin_dsn, name)
    dsn = with_database(admin_dsn, name)
    await migrate_services(dsn, SERVICES, PASSWORDS)
    return dsn


async def _fill(dsn: str) -> None:
    pool = await create_pool(dsn, max_size=2)
    try:
        await EventStore(pool, "sip_gateway").append("call-1", [offered_call(1), offered_call(2)])
        await EventStore(pool, "acd").append("call-2", [offered_call(3)])
        await pool.execute(
            "insert into dialer.do_not_call (tenant, number, source) values "
            "('demo', '+242066000001', 'client file')"
        )
        await pool.execute("insert into acd.relay_positions (relay, position) values ('acd', 1)")
        await pool.execute(
            "insert into stats_projector.tenant_settings values ('demo', 'Africa/Brazzaville')"
        )
    finally:
        await pool.close()


async def _rows(dsn: str, table: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r.values()) for r in await conn.fetch(f"select * from {table} order by 1")]
    finally:
        await conn.close()


def _home(root: Path) -> Path:
    home = root / "home"
    (home / "tls").mkdir(parents=True)
    key = home / "tls" / "access-gateway.key"
    key.write_text("not really a key")
    key.chmod(0o600)
    return home


async def test_a_restore_gives_back_the_stores_and_state_exactly(
    admin_dsn: str, tmp_path: Path
) -> None:
    source, target = await _database(admin_dsn), await _database(admin_dsn)
    await _fill(source)
    archive = tmp_path / "one.plateau-backup"
    manifest = await write_backup(source, _home(tmp_path), KEY, archive)
    assert manifest["stores"]["sip_gateway"]["events"] == 2
    assert manifest["stores"]["acd"]["last_position"] == 1
    archived = {t["member"] for t in manifest["tables"]}
    assert "db/dialer/do_not_call" in archived
    assert "db/acd/relay_positions" not in archived
    assert not any(m.startswith("db/stats_projector/call") for m in archived)

    restored_home = tmp_path / "restored"
    with archive.open("rb") as handle:
        checked = check_archive(handle, KEY, str(archive))
    await restore_into(target, archive, KEY, checked, restored_home)

    for table in ("sip_gateway.events", "acd.events", "dialer.do_not_call"):
        assert await _rows(target, table) == await _rows(source, table), table
    assert await _rows(target, "stats_projector.tenant_settings") == [
        ("demo", "Africa/Brazzaville")
    ]
    assert await _rows(target, "acd.relay_positions") == []
    key = restored_home / "tls" / "access-gateway.key"
    assert key.read_text() == "not really a key"
    assert key.stat().st_mode & 0o777 == 0o600


def _rewrite_manifest(archive: Path, change: dict[str, object]) -> bytes:
    """The same archive with its manifest changed, sealed again with the key: what only
    someone holding the key could make."""
    out = io.BytesIO()
    writer = ArchiveWriter(out, KEY)
    with archive.open("rb") as handle:
        for record in ArchiveReader(handle, KEY).records():
            if record.kind == BEGIN:
                body = record.json()
                writer.begin(body.pop("name"), **body)
            elif record.kind == DATA:
                writer.write(record.payload)
            elif record.kind == END:
                writer.end()
            elif record.kind == MANIFEST:
                manifest = record.json()
                manifest.pop("members")
                manifest.pop("format_version")
                manifest["stores"]["sip_gateway"].update(change)
                writer.finish(manifest)
    return out.getvalue()


async def test_a_chain_that_does_not_reach_the_manifest_head_rolls_everything_back(
    admin_dsn: str, tmp_path: Path
) -> None:
    source, target = await _database(admin_dsn), await _database(admin_dsn)
    await _fill(source)
    archive = tmp_path / "one.plateau-backup"
    await write_backup(source, _home(tmp_path), KEY, archive)
    forged = tmp_path / "forged.plateau-backup"
    forged.write_bytes(_rewrite_manifest(archive, {"head_hash": "00" * 32}))
    with forged.open("rb") as handle:
        manifest = check_archive(handle, KEY, str(forged))
    restored_home = tmp_path / "restored"

    with pytest.raises(ArchiveError, match="does not match the manifest"):
        await restore_into(target, forged, KEY, manifest, restored_home)

    for table in ("sip_gateway.events", "acd.events", "dialer.do_not_call"):
        assert await _rows(target, table) == [], table
    assert not (restored_home / "tls" / "access-gateway.key").exists()
    assert list(restored_home.rglob("*.restoring")) == []
