"""The migration runner against real PostgreSQL: idempotence, refusal of edited history,
and clear errors for malformed files."""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import pytest

from plateau_runtime.db import connect
from plateau_runtime.migrations import MigrationError, ServiceSchema, discover, migrate, role_dsn

pytestmark = pytest.mark.integration


async def test_migrations_apply_once_and_grant_the_service_role_its_tables(
    admin_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_queues.sql").write_text(
        "create table queues (tenant text not null, name text not null, "
        "primary key (tenant, name));"
    )
    service = ServiceSchema(f"m_{secrets.token_hex(4)}", tmp_path)
    admin = await connect(admin_dsn)
    try:
        first = await migrate(admin, service, "pw-one")
        again = await migrate(admin, service, "pw-two")
    finally:
        await admin.close()
    sources = [m.source for m in first]
    assert sources[0] == "runtime" and sources[-1] == service.schema
    assert sources == sorted(sources, key=lambda s: s != "runtime")  # runtime's first
    assert [(m.source, m.version) for m in first][-1] == (service.schema, 1)
    assert again == []
    role = await asyncpg.connect(role_dsn(admin_dsn, service, "pw-two"))
    try:
        await role.execute("insert into queues values ('acme', 'care')")
        assert await role.fetchval("select count(*) from queues") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await role.execute("create table sneaky (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await role.execute("delete from schema_migrations")
    finally:
        await role.close()


async def test_an_edited_applied_migration_is_refused(admin_dsn: str, tmp_path: Path) -> None:
    migration = tmp_path / "0001_agents.sql"
    migration.write_text("create table agents (id text primary key);")
    service = ServiceSchema(f"m_{secrets.token_hex(4)}", tmp_path)
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, service, "pw")
        migration.write_text("create table agents (id text primary key, extra int);")
        with pytest.raises(MigrationError, match="edited"):
            await migrate(admin, service, "pw")
    finally:
        await admin.close()


async def test_a_failing_migration_applies_nothing(admin_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("create table fine (x int);")
    (tmp_path / "0002_broken.sql").write_text("create tabel broken (x int);")
    service = ServiceSchema(f"m_{secrets.token_hex(4)}", tmp_path)
    admin = await connect(admin_dsn)
    try:
        with pytest.raises(MigrationError, match="0002_broken"):
            await migrate(admin, service, "pw")
        exists = await admin.fetchval(
            "select count(*) from information_schema.tables where table_schema = $1", service.schema
        )
    finally:
        await admin.close()
    assert exists == 0


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
@pytest.mark.unit
def test_malformed_migration_names_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("select 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(tmp_path, "svc")


@pytest.mark.unit
def test_duplicate_migration_numbers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("select 1;")
    (tmp_path / "0001_b.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match="share a number"):
        discover(tmp_path, "svc")
