"""PostgreSQL connections: one pool factory with JSON codecs and clear failure messages."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from plateau_runtime.errors import ConfigurationError, DependencyUnavailableError

#: A connection, whether held directly or borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

#: Set on every connection, whatever the server or role default. Floats print as the
#: shortest text that reads back exactly (PostgreSQL's default since 12): the stats
#: projector stores report figures as text, and a session at 0 or less would round them.
SESSION_SETTINGS = {"extra_float_digits": "1"}


async def _init_connection(conn: Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def _reason(exc: BaseException) -> str:
    # TimeoutError and some OSErrors stringify to nothing; name the class instead.
    return str(exc) or exc.__class__.__name__


def _where(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname or '?'}:{parts.port or 5432}/{parts.path.lstrip('/') or '?'}"


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A connection pool, or a ``DependencyUnavailableError`` that says where and why."""
    if not dsn:
        raise ConfigurationError(
            "no database URL is configured",
            "set PLATEAU_DATABASE_URL (plateau up sets it for its services)",
        )
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            server_settings=SESSION_SETTINGS,
            **kwargs,
        )
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise DependencyUnavailableError(
            f"PostgreSQL at {_where(dsn)} cannot be reached: {_reason(exc)}",
            "start it (plateau up) or fix PLATEAU_DATABASE_URL",
        ) from None
    except asyncpg.InvalidPasswordError:
        raise DependencyUnavailableError(
            f"PostgreSQL at {_where(dsn)} refused the credentials",
            "check PLATEAU_DATABASE_URL; a service role exists only once its schema is "
            "migrated, so run `plateau migrate` first",
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise DependencyUnavailableError(
            f"database {_where(dsn)} does not exist", "create it or fix PLATEAU_DATABASE_URL"
        ) from None
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """A single connection with the same codecs and error messages as ``create_pool``."""
    pool_less: asyncpg.Connection
    try:
        pool_less = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise DependencyUnavailableError(
            f"PostgreSQL at {_where(dsn)} cannot be reached: {_reason(exc)}",
            "start it (plateau up) or fix the database URL",
        ) from None
    await _init_connection(pool_less)
    return pool_less
