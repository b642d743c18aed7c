"""The CDR writer: Redis stream ``callyard:cdrs`` -> PostgreSQL ``cdrs``, exactly once (and
beside it the callback history writer, :class:`CallbackHistoryWriter`).

One or more writers share the consumer group ``cdr-writers``. Each loop:

1. claim entries another consumer read but never acknowledged for ``claim_idle`` seconds
   (``XAUTOCLAIM``: that writer died), else read new ones (``XREADGROUP ... >``);
2. insert the batch in one transaction with :func:`~appserver.store.cdrs.insert_cdrs`
   (``ON CONFLICT (call_id) DO NOTHING``: a redelivered record is not stored twice);
3. only after the commit, ``XACK`` + ``XDEL`` the entries.

A record whose call id is already stored (or already in the batch) with *different* content
is never dropped silently: it goes to the dead stream with the reason and is counted in
``callyard_cdr_conflicts_total`` (the first record stored stays in ``cdrs``).

PostgreSQL down: the batch is kept and retried with backoff, nothing is acknowledged.
Redis down: reconnect with backoff; a batch committed but not acknowledged is read again
later and skipped by the idempotent insert. An entry that can never be stored (not a valid
CDR, or rejected by a constraint) is moved to ``callyard:cdrs:dead`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from redis.exceptions import RedisError, ResponseError

from appserver.cdr import DEAD_STREAM, GROUP, STREAM
from appserver.cdr.record import CdrRecord, utc
from appserver.metrics import CDR_CONFLICTS
from appserver.recordings import add_checksums
from appserver.shells.aio import honour_cancel
from appserver.store.callbacks import HISTORY_STREAM, apply_event
from appserver.store.cdrs import Cdr, differing_cdrs, insert_cdrs
from appserver.store.db import DB_UNAVAILABLE

log = logging.getLogger("callyard.cdr.writer")

_PG_ERRORS = (*DB_UNAVAILABLE, asyncpg.PostgresError)
# Errors of a row itself: retrying cannot help, so the entry goes to the dead stream.
_ROW_ERRORS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)


def to_cdr(record: CdrRecord) -> Cdr:
    started = utc(record.started_at)
    assert started is not None
    return Cdr(
        call_id=record.call_id, engine=record.engine, started_at=started, node=record.node,
        caller=record.caller, called=record.called, answered_at=utc(record.answered_at),
        ended_at=utc(record.ended_at), menu_path=record.menu_path, queue=record.queue,
        wait_seconds=record.wait_seconds, agent=record.agent, disposition=record.disposition,
        hangup_cause=record.hangup_cause or None, extra=record.extra,
    )


@dataclass
class WriterStats:
    inserted: int = 0  # new rows
    duplicates: int = 0  # records already stored exactly so (redeliveries)
    conflicts: int = 0  # different records for a stored call id (moved to the dead stream)
    dead: int = 0  # entries moved to the dead stream
    batches: int = 0


class CdrWriter:
    def __init__(self, redis: Any, pool: asyncpg.Pool, *, stream: str = STREAM,
                 group: str = GROUP, consumer: str | None = None, batch: int = 500,
                 block_ms: int = 1000, claim_idle: float = 30.0,
                 retry_max: float = 10.0, recordings_dir: str | None = None) -> None:
        self.redis = redis
        self.pool = pool
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self.retry_max = retry_max
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None
        self.stats = WriterStats()
        self.database_ok = False
        self.redis_ok = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.ensure_future(self.run())

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (up to ``timeout``), then stop."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
        except Exception:
            log.exception("CDR writer failed")
        self._task = None

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await self.ensure_group()
                self.redis_ok = True
                while not self._stopping.is_set():
                    await self.step()
                    delay = 0.2
            except (RedisError, OSError) as exc:
                honour_cancel()
                self.redis_ok = False
                log.warning("CDR writer: Redis unavailable; retrying",
                            extra={"error": str(exc) or type(exc).__name__})
                await self._sleep(delay)
                delay = min(self.retry_max, delay * 2)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ------------------------------------------------------------------ one batch

    async def step(self) -> int:
        """Read (claim first) one batch and store it; the number of entries handled."""
        entries = await self._claim()
        if not entries:
            block = None if self._stopping.is_set() else self.block_ms
            reply = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                count=self.batch, block=block)
            entries = reply[0][1] if reply else []
        self.redis_ok = True
        if not entries:
            return 0
        await self._store(entries)
        return len(entries)

    async def _claim(self) -> list[tuple[str, dict[str, str]]]:
        reply = await self.redis.xautoclaim(self.stream, self.group, self.consumer,
                                            min_idle_time=self.claim_idle_ms, start_id="0-0",
                                            count=self.batch)
        entries = [e for e in reply[1] if e[1] is not None]
        if entries:
            log.info("claimed CDRs left pending by another writer",
                     extra={"count": len(entries)})
        return entries

    async def _store(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        raw = {entry_id: _strs(fields) for entry_id, fields in entries}
        dead: list[tuple[str, dict[str, str], str]] = []
        # Rounds of at most one record per call id: a second, different record for a call
        # is then judged exactly as if it came in a later batch.
        rounds: list[list[tuple[str, Cdr]]] = []
        variants: dict[str, list[Cdr]] = {}
        for entry_id, fields in raw.items():
            try:
                cdr = to_cdr(CdrRecord.from_fields(fields))
            except ValueError as exc:
                dead.append((entry_id, fields, str(exc)))
                continue
            seen = variants.setdefault(cdr.call_id, [])
            if cdr in seen:  # the same record twice (a retried XADD)
                self.stats.duplicates += 1
                continue
            if len(seen) == len(rounds):
                rounds.append([])
            rounds[len(seen)].append((entry_id, cdr))
            seen.append(cdr)
        for batch in rounds:
            dead += await self._store_round(batch, raw)
        self.stats.batches += 1
        if dead:
            await self._bury(dead)
        ids = [entry_id for entry_id, _ in entries]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()

    async def _store_round(self, batch: list[tuple[str, Cdr]], raw: dict[str, dict[str, str]]
                           ) -> list[tuple[str, dict[str, str], str]]:
        """Store records of distinct call ids; return the entries for the dead stream: rows
        the database rejected and records that differ from the one already stored."""
        cdrs = [cdr for _, cdr in batch]
        delay = 0.2
        while True:
            try:
                new, rejected = await self._insert(cdrs)
                differing = set(await differing_cdrs(self.pool, [
                    c for c in cdrs if c.call_id not in new and c.call_id not in rejected]))
                self.database_ok = True
                break
            except _PG_ERRORS as exc:
                self.database_ok = False
                log.warning("CDR writer: PostgreSQL unavailable; batch kept, retrying",
                            extra={"batch": len(cdrs), "error": str(exc) or type(exc).__name__})
                await asyncio.sleep(delay)  # never give up a batch in hand
                delay = min(self.retry_max, delay * 2)
        dead = []
        for entry_id, cdr in batch:
            if cdr.call_id in rejected:
                dead.append((entry_id, raw[entry_id], rejected[cdr.call_id]))
            elif cdr.call_id in differing:
                dead.append((entry_id, raw[entry_id], "conflicting record: this call id is "
                             "already stored with a different record"))
        self.stats.inserted += len(new)
        self.stats.conflicts += len(differing)
        if self.recordings_dir is not None and new:
            await self._checksums(new)
        self.stats.duplicates += len(batch) - len(new) - len(rejected) - len(differing)
        CDR_CONFLICTS.inc(len(differing))
        return dead

    async def _insert(self, cdrs: list[Cdr]) -> tuple[set[str], dict[str, str]]:
        """Insert in one transaction: (call ids of new rows, {call id: reason} of rows
        rejected).

        On a row error the batch is retried row by row so one bad record stops no other."""
        if not cdrs:
            return set(), {}
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return set(await insert_cdrs(conn, cdrs)), {}
        except _ROW_ERRORS:
            pass
        new: set[str] = set()
        rejected: dict[str, str] = {}
        for cdr in cdrs:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    new.update(await insert_cdrs(conn, [cdr]))
            except _ROW_ERRORS as exc:
                rejected[cdr.call_id] = f"{type(exc).__name__}: {exc}"
        return new, rejected

    async def _checksums(self, call_ids: set[str]) -> None:
        """The new calls' recordings are closed (the calls are over): add their SHA-256.
        Never holds CDRs up: a failure is logged, the checksums stay NULL."""
        assert self.recordings_dir is not None
        try:
            await add_checksums(self.pool, self.recordings_dir, call_ids)
        except (*_PG_ERRORS, OSError) as exc:
            log.warning("recording checksums skipped", extra={"error": str(exc)})

    async def _bury(self, dead: list[tuple[str, dict[str, str], str]]) -> None:
        for entry_id, fields, reason in dead:
            log.error("CDR cannot be stored; moved to the dead stream",
                      extra={"call_id": fields.get("call_id", ""), "entry": entry_id,
                             "error": reason})
            await self.redis.xadd(DEAD_STREAM, {**fields, "_error": reason, "_entry": entry_id},
                                  maxlen=100_000, approximate=True)
        self.stats.dead += len(dead)

    # ------------------------------------------------------------------ backlog

    async def backlog(self) -> tuple[int, int]:
        """(entries in the stream, entries read but not acknowledged)."""
        return await stream_backlog(self.redis, self.stream, self.group)


async def stream_backlog(redis: Any, stream: str = STREAM, group: str = GROUP
                         ) -> tuple[int, int]:
    """(entries in the CDR stream, entries a writer read but did not acknowledge yet)."""
    length = await redis.xlen(stream)
    try:
        pending = await redis.xpending(stream, group)
    except ResponseError:  # no group yet
        return int(length), 0
    return int(length), int(pending["pending"])


def _strs(fields: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else str(k)):
            (v.decode() if isinstance(v, bytes) else str(v)) for k, v in fields.items()}


# The callback history writer: Redis stream ``{callyard:q}:callbacks:history`` -> PostgreSQL
# ``callbacks`` / ``callback_attempts`` (:mod:`appserver.store.callbacks`): this writer's loop
# (consumer group, claiming another writer's entries, backoff) with its own stream and group,
# run beside it (``callyard cdr-writer``, ``callyard dev``). Events are applied one by one, in
# order, each idempotently; one PostgreSQL rejects is logged and dropped, the others go on.
CALLBACK_GROUP = "callback-writers"


class CallbackHistoryWriter(CdrWriter):
    def __init__(self, redis: Any, pool: asyncpg.Pool, **kwargs: Any) -> None:
        super().__init__(redis, pool, stream=HISTORY_STREAM, group=CALLBACK_GROUP, **kwargs)

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


@contextlib.asynccontextmanager
async def writer_running(redis: Any, pool: asyncpg.Pool, recordings_dir: str | None = None
                         ) -> AsyncIterator[CdrWriter]:
    """A writer (and the callback history writer and the Redis metrics poller) inside
    another process, e.g. ``callyard dev``."""
    from appserver.metrics import RedisStatsPoller
    from appserver.queues.store import QueueStore

    writer = CdrWriter(redis, pool, recordings_dir=recordings_dir)
    callbacks = CallbackHistoryWriter(redis, pool)
    poller = RedisStatsPoller(QueueStore(redis), writer.backlog)
    writer.start()
    callbacks.start()
    poller.start()
    try:
        yield writer
    finally:
        await poller.stop()
        await callbacks.stop()
        await writer.stop()
