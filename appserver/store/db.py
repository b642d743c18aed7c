"""asyncpg connections: a pool with jsonb/json decoded to Python objects."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg

APPLICATION_NAME = "callyard"

# Errors that mean "no writable primary right now" (a failover, a restart, the network), not
# a fault of the statement: wait and retry, or tell the client to (503). Connecting to a
# multi-host URL raises the last host's OSError, or TargetServerAttributeNotMatched when
# every host answered but none is read-write (all standbys, mid-failover).
DB_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # 08xxx, e.g. the server went away mid-statement
    asyncpg.InterfaceError,  # "connection is closed": a pooled connection lost its server
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ReadOnlySQLTransactionError,  # a write reached a read-only (fenced) server
    asyncpg.TargetServerAttributeNotMatched,
)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: jsonb and json columns read and written as Python objects."""
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
        )


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float = 30.0,
    **kwargs: Any,
) -> asyncpg.Pool:
    """A pool on ``dsn``; connections are recycled after 5 idle minutes."""
    settings = kwargs.pop("server_settings", {})
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        max_inactive_connection_lifetime=300.0,
        init=init_connection,
        server_settings={"application_name": APPLICATION_NAME, **settings},
        **kwargs,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A single connection with the same codecs and application name as the pool (e.g. for
    LISTEN, or seeding: Callyard's own writes are not audited as hand edits in SQL)."""
    settings = kwargs.pop("server_settings", {})
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": APPLICATION_NAME, **settings}, **kwargs
    )
    await init_connection(conn)
    return conn


def from_jsonb(value: Any) -> Any:
    """A json/jsonb column value as Python, with or without the codec of :func:`init_connection`.

    Repositories write jsonb as ``$n::text::jsonb`` with ``json.dumps`` so they work on any
    asyncpg connection; only use this for columns holding objects or arrays.
    """
    return json.loads(value) if isinstance(value, str) else value


# Repositories take either a pool or a connection (e.g. one already inside a transaction).
Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection


class NotFoundError(LookupError):
    """A row a write refers to by name does not exist; the message names it."""


@asynccontextmanager
async def transaction(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction (a savepoint when ``db`` already is in one)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
