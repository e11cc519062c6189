"""Test fixtures shared by every package: the real embedded PostgreSQL and Kafka-protocol
broker, started once per test session through the same launchers ``plateau up`` uses."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from plateau_runtime.db import create_pool
from plateau_runtime.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from plateau_runtime.services import SERVICES
from plateau_runtime.testing import MigratedSchema, make_schema


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    """A scratch directory for the session's servers (outside the checkout)."""
    path = Path(tempfile.mkdtemp(prefix="plateau-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(work_dir: Path) -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL server, real, on a free loopback port."""
    server = EmbeddedPostgres(work_dir / "pg" / "data", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_dsn(postgres: EmbeddedPostgres) -> str:
    return postgres.admin_dsn


@pytest.fixture(scope="session")
def broker(work_dir: Path) -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker, real, on a free loopback port."""
    server = EmbeddedBroker(free_port(), work_dir / "logs" / "broker.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def service_schema(admin_dsn: str, request: pytest.FixtureRequest) -> MigratedSchema:
    """A fresh schema with the runtime's tables, reachable as its service role; in a
    service's own tests (``services/<name>/tests``), with that service's migrations too."""
    return await make_schema(admin_dsn, _service_migrations(request.path))


def _service_migrations(test_path: Path) -> Path | None:
    root = Path(__file__).resolve().parent
    try:
        parts = test_path.resolve().relative_to(root).parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] != "services":
        return None
    spec = next((s for s in SERVICES if s.name == parts[1]), None)
    return spec.migrations_dir() if spec is not None else None


@pytest.fixture
async def service_pool(service_schema: MigratedSchema) -> AsyncIterator[asyncpg.Pool]:
    """A pool connected as the fresh schema's service role."""
    pool = await create_pool(service_schema.dsn, max_size=20)
    yield pool
    await pool.close()


_KINDS = {"unit", "integration", "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test says what it needs: unit, integration or e2e (strict, so none is forgotten)."""
    unmarked = [i.nodeid for i in items if not _KINDS & {m.name for m in i.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(
            "tests without a unit/integration/e2e marker: " + ", ".join(unmarked[:10])
        )
