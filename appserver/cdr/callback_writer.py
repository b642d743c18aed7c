"""The callback history writer: Redis stream ``{callyard:q}:callbacks:history`` ->
PostgreSQL ``callbacks`` / ``callback_attempts`` (:mod:`appserver.store.callbacks`).

The CDR writer's loop (consumer group, claiming another writer's entries, backoff), with
its own stream and group; it runs beside the CDR writer (``callyard cdr-writer``,
``callyard dev``). Events are applied one by one, in order, each idempotently; an event
PostgreSQL rejects is logged and dropped, the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from appserver.cdr.writer import _PG_ERRORS, _ROW_ERRORS, CdrWriter, _strs
from appserver.store.callbacks import HISTORY_STREAM, apply_event

log = logging.getLogger("callyard.cdr.callbacks")
GROUP = "callback-writers"


class CallbackHistoryWriter(CdrWriter):
    def __init__(self, redis: Any, pool: asyncpg.Pool, **kwargs: Any) -> None:
        super().__init__(redis, pool, stream=HISTORY_STREAM, group=GROUP, **kwargs)

    async def _store(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in entries:
            await self._apply(entry_id, _strs(fields))
        self.stats.batches += 1
        ids = [entry_id for entry_id, _ in entries]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()

    async def _apply(self, entry_id: str, event: dict[str, str]) -> None:
        delay = 0.2
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await apply_event(conn, event)
                self.database_ok = True
                self.stats.inserted += 1
                return
            except (*_ROW_ERRORS, KeyError, ValueError) as exc:
                log.error("callback history event dropped", extra={
                    "entry": entry_id, "event": repr(event)[:300], "error": str(exc)})
                self.stats.dead += 1
                return
            except _PG_ERRORS as exc:
                self.database_ok = False
                log.warning("callback history: PostgreSQL unavailable; retrying",
                            extra={"error": str(exc) or type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(self.retry_max, delay * 2)
