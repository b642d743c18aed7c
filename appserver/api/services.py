"""What the API process runs besides HTTP: database pool, Redis, the menu reloader."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI

from appserver.api.app import create_app
from appserver.api.sim_routes import SimCalls
from appserver.menus.reloader import MenuReloader
from appserver.store.db import create_pool


@dataclass
class Services:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    reloader: MenuReloader

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, dsn: str, redis_url: str) -> AsyncIterator[Services]:
        pool = await create_pool(dsn)
        redis = aioredis.Redis.from_url(redis_url)
        reloader = MenuReloader(dsn, redis, pool=pool)
        try:
            await reloader.start()
            yield cls(pool, redis, reloader)
        finally:
            await reloader.stop()
            await redis.aclose()
            await pool.close()

    async def ready(self) -> dict[str, str]:
        """Readiness of each dependency: "ok" or the error."""
        checks: dict[str, str] = {}
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"error: {exc}"
        try:
            await self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc}"
        return checks

    def app(self, sim_calls: SimCalls | None = None) -> FastAPI:
        return create_app(sim_calls=sim_calls, readiness=self.ready)
