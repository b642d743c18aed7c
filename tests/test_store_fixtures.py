"""The shared fixtures give each test real, isolated PostgreSQL and Redis state."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from appserver.store.migrations import discover


async def test_pg_dsn_is_migrated(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == [m.version for m in discover()]


async def test_pg_dsn_is_fresh_per_test_first(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute("CREATE TABLE scratch (x int)")
    await pg_pool.execute("INSERT INTO scratch VALUES (1)")


async def test_pg_dsn_is_fresh_per_test_second(pg_pool: asyncpg.Pool) -> None:
    # The table created by the previous test does not exist in this test's database.
    assert await pg_pool.fetchval("SELECT to_regclass('scratch')") is None


async def test_redis_flushed_per_test_first(redis_client: aioredis.Redis) -> None:
    await redis_client.set("leftover", "1")
    assert await redis_client.get("leftover") == "1"


async def test_redis_flushed_per_test_second(redis_client: aioredis.Redis) -> None:
    assert await redis_client.get("leftover") is None


def test_sync_test_can_use_pg_dsn(pg_dsn: str, redis_url: str) -> None:
    assert pg_dsn.startswith("postgresql://")
    assert redis_url.startswith("redis://")
