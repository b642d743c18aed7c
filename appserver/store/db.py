"""asyncpg connections: a pool with jsonb/json decoded to Python objects."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

APPLICATION_NAME = "callyard"


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
    """A single connection with the same codecs as the pool (e.g. for LISTEN)."""
    conn = await asyncpg.connect(dsn, **kwargs)
    await init_connection(conn)
    return conn
