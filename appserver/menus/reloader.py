"""Live reload: LISTEN ``callyard_config``, debounce, recompile, publish.

Every configuration table NOTIFYs ``callyard_config`` with ``{"table", "op", "id"}``.
Relevant notifications mark the menu set dirty; ``debounce`` seconds after the first one the
whole set is reloaded in one snapshot, validated and compiled (about 50 ms for
500 menus), then published. Edits arriving meanwhile trigger one more reload.

Each set published is then recorded in the menu history (:mod:`appserver.menus.history`)
unless a version has it already; a PostgreSQL error there is logged and retried at the next
reload, never in the way of publishing.

An invalid edit never reaches callers: the last valid version stays live; the error is
logged, recorded in the status hash (``last_error``, ``errors``) and counted in
``callyard_menu_reload_total{result="invalid"}``. A full reload also runs at start, after
the LISTEN connection is re-established (notifications may have been missed) and every
``resync_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis import RedisError

from appserver.menus.history import record_published
from appserver.menus.loader import RELEVANT_TABLES, load_source
from appserver.menus.publisher import MenuPublisher
from appserver.shells.aio import honour_cancel
from appserver.store.db import DB_UNAVAILABLE, connect
from ivr.compile import compile_menuset
from ivr.model import MenuSource
from ivr.validate import MenuSetInvalid, errors

log = logging.getLogger("callyard.menus")
CHANNEL = "callyard_config"

RELOADS = Counter(
    "callyard_menu_reload_total",
    "Menu set reloads by result (published, unchanged, invalid, failed).",
    ["result"],
)
LIVE_VERSION = Gauge("callyard_menu_version", "Version of the live menu set.")


class MenuReloader:
    def __init__(
        self,
        dsn: str,
        redis: aioredis.Redis,
        *,
        pool: asyncpg.Pool | None = None,
        debounce: float = 0.2,
        resync_interval: float = 60.0,
        history_lock_wait: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.pool = pool
        self.publisher = MenuPublisher(redis)
        self.debounce = debounce
        self.resync_interval = resync_interval
        # How long recording a version waits for a menu write in progress (a stuck one must
        # not stop the reloader publishing the edits that follow).
        self.history_lock_wait = history_lock_wait
        self.version: int | None = None  # live version after the last reload
        self.last_error: str = ""
        self._dirty = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen, publish the current menu set, and keep following edits until stop().

        If PostgreSQL or Redis is not reachable yet, the reloader keeps retrying in the
        background (workers go on serving the last published version meanwhile).
        """
        try:
            await self._listen()
            await self.reload()
        except (*DB_UNAVAILABLE, asyncpg.PostgresError, RedisError) as exc:
            log.error("menu reloader cannot start yet; retrying", extra={"error": str(exc)})
            self._dirty.set()
        self._task = asyncio.create_task(self._run(), name="menu-reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_listener()

    async def __aenter__(self) -> MenuReloader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- reload
    async def reload(self) -> bool:
        """Load, validate, compile and publish now, then record the set in the menu history;
        False when the candidate was rejected."""
        live = await self._publish()
        if live is None:
            return False
        await self._record_version(*live)
        return True

    async def _publish(self) -> tuple[MenuSource, bool] | None:
        """The source of the set now live and whether it changed in Redis; None when it
        could not be published."""
        async with self._lock:
            try:
                async with self._connection() as conn:
                    source = await load_source(conn)
                menuset = compile_menuset(source)
            except MenuSetInvalid as exc:
                problems = errors(exc.issues)
                self.last_error = str(exc)
                await self._learn_live_version()
                log.warning(
                    "menu edit rejected; the last valid version stays live",
                    extra={"live_version": self.version, "errors": [str(i) for i in problems]},
                )
                RELOADS.labels("invalid").inc()
                await self._record(self.last_error, problems)
                return None
            except (*DB_UNAVAILABLE, asyncpg.PostgresError, ValueError) as exc:
                self.last_error = f"could not load menus: {exc}"
                await self._learn_live_version()
                log.error("menu reload failed", extra={"error": str(exc)})
                RELOADS.labels("failed").inc()
                await self._record(self.last_error, [])
                return None
            published, self.version = await self.publisher.publish(menuset)
            self.last_error = ""
            LIVE_VERSION.set(self.version)
            RELOADS.labels("published" if published else "unchanged").inc()
            return source, published

    async def _record_version(self, source: MenuSource, changed: bool) -> None:
        try:
            async with self._connection() as conn:
                version = await record_published(conn, source, changed=changed,
                                                 lock_wait=self.history_lock_wait)
        except (*DB_UNAVAILABLE, asyncpg.PostgresError, TimeoutError) as exc:
            log.error("menu version not recorded; retrying at the next reload",
                      extra={"error": str(exc)})
            return
        if version is not None:
            log.info("menu version recorded", extra={
                "menu_version": version.id, "action": version.action, "by": version.published_by})

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.pool is not None:
            async with self.pool.acquire() as conn:
                yield conn
        else:
            conn = await connect(self.dsn)
            try:
                yield conn
            finally:
                await conn.close()

    async def _learn_live_version(self) -> None:
        """After a restart, the live version is whatever Redis serves."""
        if self.version is None:
            with contextlib.suppress(Exception):
                self.version = (await self.publisher.status())["version"]

    async def _record(self, message: str, issues: list[Any]) -> None:
        try:
            await self.publisher.record_error(message, issues)
        except Exception as exc:  # Redis down: the log line above still tells the story
            log.error("could not record the menu error in Redis", extra={"error": str(exc)})

    # ---------------------------------------------------------------- listening
    async def _listen(self) -> None:
        conn = await connect(self.dsn)
        await conn.add_listener(CHANNEL, self._on_notify)
        self._listener = conn

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.remove_listener(CHANNEL, self._on_notify)
            with contextlib.suppress(Exception):
                await conn.close()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            table = json.loads(payload).get("table")
        except (ValueError, AttributeError):
            table = None
        if table is None or table in RELEVANT_TABLES:
            self._dirty.set()

    async def _run(self) -> None:
        backoff = 0.5
        next_resync = time.monotonic() + self.resync_interval
        while True:
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._close_listener()
                    await self._listen()
                    log.info("menu reloader listening again")
                    self._dirty.set()  # notifications may have been missed
                    backoff = 0.5
                timeout = max(0.0, min(1.0, next_resync - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), timeout)
                if self._dirty.is_set():
                    await asyncio.sleep(self.debounce)
                    self._dirty.clear()
                    await self.reload()
                elif time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + self.resync_interval
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                honour_cancel()
                log.error("menu reloader error; retrying", extra={"error": str(exc)})
                self._dirty.set()  # whatever failed (PostgreSQL, Redis) is retried
                await asyncio.sleep(backoff)
                # At most 5 s: after a failover, edits made on the new primary wait that long.
                backoff = min(backoff * 2, 5.0)
