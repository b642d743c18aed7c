"""What the API process runs besides HTTP: database pool, Redis, the menu reloader, the
agent event hub (console WebSockets, LiveKit room clean-up)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.exceptions import RedisError

from appserver.api.app import create_app
from appserver.api.context import ApiContext
from appserver.health import storage_checks
from appserver.menus.reloader import MenuReloader
from appserver.queues import config as queue_config
from appserver.queues.store import QueueStore
from appserver.redisconn import connect
from appserver.settings import Settings, get_settings
from appserver.shells.aio import honour_cancel
from appserver.store.db import DB_UNAVAILABLE, create_pool

log = logging.getLogger("callyard.api")


@dataclass
class Services:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    reloader: MenuReloader
    # More readiness checks by name, e.g. engine connections under `callyard dev`:
    # each returns "ok" or what is wrong.
    extra_checks: dict[str, Callable[[], str]] = field(default_factory=dict)
    # REST API, console and agent events; set by started().
    context: ApiContext | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def started(
        cls, dsn: str, redis_url: str, settings: Settings | None = None, *,
        require_livekit: bool = True,
    ) -> AsyncIterator[Services]:
        """``require_livekit=False``: accept calls without a LiveKit room when LiveKit is
        not running (``callyard dev``, whose engines are simulated)."""
        pool = await create_pool(dsn)
        redis = connect(redis_url, "asyncio")
        reloader = MenuReloader(dsn, redis, pool=pool)
        queues = asyncio.create_task(_publish_queues(pool, redis), name="queue-config")
        context: ApiContext | None = None
        try:
            await reloader.start()
            context = await ApiContext.start(pool, redis, settings or get_settings(),
                                             require_livekit=require_livekit)
            yield cls(pool, redis, reloader, context=context)
        finally:
            if context is not None:
                await context.stop()
            queues.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queues
            await reloader.stop()
            await redis.aclose()
            await pool.close()

    async def ready(self) -> dict[str, str]:
        """Readiness of each dependency: "ok" or the error."""
        checks = await storage_checks(self.pool, self.redis)
        for name, check in self.extra_checks.items():
            checks[name] = check()
        return checks

    def app(self, metrics_peers: Mapping[str, str] | None = None) -> FastAPI:
        return create_app(readiness=self.ready, context=self.context,
                          metrics_peers=metrics_peers)


async def _publish_queues(pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    """Keep queue definitions in Redis in step with PostgreSQL, through outages."""
    store = QueueStore(redis)
    while True:
        try:
            await queue_config.watch(pool, store)
        except (*DB_UNAVAILABLE, asyncpg.PostgresError, RedisError) as exc:
            honour_cancel()
            log.error("queue definitions not published; retrying", extra={"error": str(exc)})
            await asyncio.sleep(2)
