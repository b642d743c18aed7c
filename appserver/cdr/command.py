"""``callyard cdr-writer``: store the CDRs workers append to Redis into PostgreSQL.

Run one or more (they share the consumer group). Also stores the callback history
(:class:`appserver.cdr.writer.CallbackHistoryWriter`). Also publishes queue, agent and CDR
backlog gauges, served with ``/healthz`` and ``/readyz`` on ``CALLYARD_HEALTH_LISTEN``.
SIGTERM: the batch in hand is finished, then the process exits 0.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    import asyncpg

    from appserver.cdr.writer import CdrWriter
    from appserver.settings import Settings

HELP = "Store call detail records from the Redis stream into PostgreSQL (exactly once)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=500, help="records per insert (500)")
    parser.add_argument(
        "--claim-idle", type=float, default=30.0,
        help="seconds before another writer's unacknowledged records are taken over (30)",
    )
    parser.add_argument("--health-listen", metavar="HOST:PORT",
                        help="override CALLYARD_HEALTH_LISTEN")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import sys

    if args.batch < 1:
        print("callyard cdr-writer: --batch must be at least 1", file=sys.stderr)
        return 2
    dsn, redis_url = settings.required_urls("database_url", "redis_url")
    return asyncio.run(serve(dsn, redis_url, batch=args.batch, claim_idle=args.claim_idle,
                             health_listen=args.health_listen or settings.health_listen,
                             recordings_dir=settings.recordings_dir))


async def serve(dsn: str, redis_url: str, *, batch: int = 500, claim_idle: float = 30.0,
                health_listen: str | None = None, recordings_dir: str | None = None) -> int:
    import asyncio
    import contextlib
    import logging
    import signal

    from appserver.cdr.writer import CallbackHistoryWriter, CdrWriter
    from appserver.health import HealthServer
    from appserver.metrics import RedisStatsPoller
    from appserver.queues.store import QueueStore
    from appserver.redisconn import connect

    log = logging.getLogger("callyard.cdr")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    pool = await _pool_when_ready(dsn, stop)
    if pool is None:
        return 0
    redis = connect(redis_url, "asyncio")
    writer = CdrWriter(redis, pool, batch=batch, claim_idle=claim_idle,
                       recordings_dir=recordings_dir)
    callbacks = CallbackHistoryWriter(redis, pool, claim_idle=claim_idle)
    poller = RedisStatsPoller(QueueStore(redis), writer.backlog)
    health = HealthServer(health_listen, lambda: ready(writer)) if health_listen else None
    writer.start()
    callbacks.start()
    poller.start()
    if health:
        await health.start()
    log.info("CDR writer running", extra={"consumer": writer.consumer})
    try:
        await stop.wait()
    finally:
        if health:
            health.stopping = True
        await writer.stop()
        await callbacks.stop()
        await poller.stop()
        if health:
            await health.stop()
        log.info("CDR writer stopped", extra={"inserted": writer.stats.inserted,
                                              "duplicates": writer.stats.duplicates})
        await redis.aclose()
        await pool.close()
    return 0


async def _pool_when_ready(dsn: str, stop: asyncio.Event) -> asyncpg.Pool | None:
    """The pool, retrying while PostgreSQL is not up yet (None if stopped meanwhile)."""
    import asyncio
    import logging

    import asyncpg

    from appserver.store.db import DB_UNAVAILABLE, create_pool

    delay = 0.5
    while not stop.is_set():
        try:
            return await create_pool(dsn, min_size=1, max_size=4)
        except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
            logging.getLogger("callyard.cdr").warning(
                "PostgreSQL not reachable yet; retrying", extra={"error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)
    return None


async def ready(writer: CdrWriter) -> dict[str, str]:
    """Readiness: PostgreSQL and Redis answer."""
    from appserver.health import storage_checks

    return await storage_checks(writer.pool, writer.redis)
