"""Per-call records in Redis so a restarted worker can re-adopt channels still in Stasis.

One hash per call (``callyard:asterisk:call:<node>:<channel>``) holding the :class:`CallInfo`
(and, for a dial leg, the channel that owns it) plus one set per node and Stasis application
listing them (``callyard:asterisk:calls:<node>:<app>``): several workers, each with its own
application, share a node, and each re-adopts (or reports lost) only its application's. Records
expire after ``ttl`` seconds as a safety net; the worker deletes them when a call ends.
Redis trouble is logged and never ends a call; a deletion Redis did not take is retried in
the background (with backoff) until it lands, so no record outlives its call by long.

Saves and deletions are queued and written together, in the order they were asked for, by one
Lua script per batch (one round trip; a batch is what was asked while the one before was on
its way): at thousands of calls, a transaction each was about 6 % of the worker's CPU.
:meth:`CallStore.save` and :meth:`CallStore.delete` return once their batch is written or
failed (a failed save is logged, a failed deletion retried), so a record is in Redis before
the call's (or dial leg's) next step, as with a round trip each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from appserver.shells.aio import honour_cancel
from ivr.calls import CallInfo

log = logging.getLogger(__name__)
RETRY_MIN, RETRY_MAX = 0.5, 10.0  # seconds between attempts at deletions Redis did not take
CLOSE_TIMEOUT = 5.0  # seconds close() waits for the batch on its way

# KEYS: per change, the record and its index. ARGV[1]: the ttl; per change, the channel id,
# "s" (save) or "d" (delete) and the record's JSON ("" for a delete). Applied in order.
_BATCH = """
local ttl = tonumber(ARGV[1])
local saved = {}
for i = 1, #KEYS / 2 do
  local record, index, channel = KEYS[2 * i - 1], KEYS[2 * i], ARGV[3 * i - 1]
  if ARGV[3 * i] == 's' then
    redis.call('SET', record, ARGV[3 * i + 1], 'EX', ttl)
    redis.call('SADD', index, channel)
    saved[index] = true
  else
    redis.call('DEL', record)
    redis.call('SREM', index, channel)
  end
end
for index in pairs(saved) do redis.call('EXPIRE', index, ttl) end
return #KEYS / 2
"""


@dataclass(slots=True)
class _Change:
    node: str
    channel_id: str
    value: str  # the record's JSON; "" for a deletion
    done: asyncio.Future[None] | None  # resolved once its batch is written or failed


@dataclass(frozen=True, slots=True)
class CallRecord:
    info: CallInfo
    owner: str = ""  # for a dial leg: the caller's channel id
    started_at: float = 0.0  # Unix time the call reached a worker (0: unknown)


class CallStore:
    def __init__(
        self, redis: Redis | None, app: str = "callyard", prefix: str = "callyard:asterisk",
        ttl: int = 6 * 3600,
    ) -> None:
        self.redis = redis
        self.app = app
        self.prefix = prefix
        self.ttl = ttl
        self._script = redis.register_script(_BATCH) if redis is not None else None
        self._queued: list[_Change] = []  # for the next batch, in order
        self._flusher: asyncio.Task[None] | None = None  # writing batches while any is queued
        self._undeleted: set[tuple[str, str]] = set()  # (node, channel id) still to delete
        self._retry: asyncio.Task[None] | None = None

    def _key(self, node: str, channel_id: str) -> str:
        return f"{self.prefix}:call:{node}:{channel_id}"

    def _index(self, node: str) -> str:
        return f"{self.prefix}:calls:{node}:{self.app}"

    async def save(self, node: str, channel_id: str, record: CallRecord) -> None:
        if self.redis is None:
            return
        info = record.info
        data: dict[str, Any] = {
            "call_id": info.call_id,
            "engine": info.engine,
            "caller": info.caller,
            "called": info.called,
            "node": info.node,
            "caller_name": info.caller_name,
            "variables": dict(info.variables),
        }
        await self._queue(node, channel_id, json.dumps(
            {"info": data, "owner": record.owner, "started_at": record.started_at}))

    async def load(self, node: str, channel_id: str) -> CallRecord | None:
        if self.redis is None:
            return None
        try:
            raw = await self.redis.get(self._key(node, channel_id))
        except (RedisError, OSError) as exc:
            log.warning("could not load call record", extra={"call_id": channel_id,
                                                             "error": str(exc)})
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            info = data["info"]
            return CallRecord(
                CallInfo(
                    call_id=str(info["call_id"]),
                    engine="asterisk",
                    caller=str(info["caller"]),
                    called=str(info["called"]),
                    node=str(info.get("node", "")),
                    caller_name=str(info.get("caller_name", "")),
                    variables={str(k): str(v) for k, v in info.get("variables", {}).items()},
                ),
                owner=str(data.get("owner", "")),
                started_at=float(data.get("started_at") or 0.0),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed call record",
                        extra={"call_id": channel_id, "error": str(exc)})
            return None

    async def delete(self, node: str, channel_id: str) -> None:
        if self.redis is None:
            return
        await self._queue(node, channel_id, "")

    def _queue(self, node: str, channel_id: str, value: str) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        self._queued.append(_Change(node, channel_id, value, done))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return done

    async def _flush(self) -> None:
        """Write the queued changes, a batch at a time, until none is left. A waiter that
        gave up (its call's task was cancelled) leaves its change queued: it is written."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    await self._write(batch)
                except (RedisError, OSError) as exc:
                    self._failed(batch, exc)
                except Exception as exc:  # a bug: never leave the callers waiting
                    log.exception("call record batch failed")
                    self._failed(batch, exc)
                for change in batch:
                    if change.done is not None and not change.done.done():
                        change.done.set_result(None)
        finally:
            self._flusher = None

    async def _write(self, batch: list[_Change]) -> None:
        assert self._script is not None
        keys: list[str] = []
        args: list[Any] = [self.ttl]
        for change in batch:
            keys += (self._key(change.node, change.channel_id), self._index(change.node))
            args += (change.channel_id, "s" if change.value else "d", change.value)
        await self._script(keys=keys, args=args)

    def _failed(self, batch: list[_Change], exc: Exception) -> None:
        saves = [c.channel_id for c in batch if c.value]
        deletes = {(c.node, c.channel_id) for c in batch if not c.value}
        if saves:
            log.warning("could not save call records", extra={
                "count": len(saves), "call_ids": saves[:20], "error": str(exc)})
        if deletes:
            log.warning("could not delete call records; retrying", extra={
                "count": len(deletes), "error": str(exc)})
            self._undeleted |= deletes
            if self._retry is None or self._retry.done():
                self._retry = asyncio.ensure_future(self._retry_deletes())

    async def _retry_deletes(self) -> None:
        delay = RETRY_MIN
        while self._undeleted:
            await asyncio.sleep(delay)
            batch = set(self._undeleted)
            try:
                await self._write([_Change(node, channel_id, "", None)
                                   for node, channel_id in batch])
            except (RedisError, OSError):
                honour_cancel()
                delay = min(RETRY_MAX, delay * 2)
                continue
            self._undeleted -= batch
            log.info("call records deleted after a Redis outage", extra={"count": len(batch)})

    async def close(self) -> None:
        """Write what is queued (for up to :data:`CLOSE_TIMEOUT` seconds), then stop retrying
        (at shutdown; the next worker's re-adoption removes what is left)."""
        flusher = self._flusher
        if flusher is not None:
            await asyncio.wait([flusher], timeout=CLOSE_TIMEOUT)
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None

    async def channel_ids(self, node: str) -> set[str]:
        if self.redis is None:
            return set()
        try:
            members = await self.redis.smembers(self._index(node))
        except (RedisError, OSError) as exc:
            log.warning("could not list call records", extra={"node": node, "error": str(exc)})
            return set()
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}
