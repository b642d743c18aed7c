"""Per-call records in Redis so a restarted worker can re-adopt channels still in Stasis.

One hash per call (``callyard:asterisk:call:<node>:<channel>``) holding the :class:`CallInfo`
(and, for a dial leg, the channel that owns it) plus one set per node and Stasis application
listing them (``callyard:asterisk:calls:<node>:<app>``): several workers, each with its own
application, share a node, and each re-adopts (or reports lost) only its application's. Records
expire after ``ttl`` seconds as a safety net; the worker deletes them when a call ends.
Redis trouble is logged and never ends a call; a deletion Redis did not take is retried in
the background (with backoff) until it lands, so no record outlives its call by long.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ivr.calls import CallInfo

log = logging.getLogger(__name__)
RETRY_MIN, RETRY_MAX = 0.5, 10.0  # seconds between attempts at deletions Redis did not take


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
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    self._key(node, channel_id),
                    json.dumps({"info": data, "owner": record.owner,
                                "started_at": record.started_at}),
                    ex=self.ttl,
                )
                pipe.sadd(self._index(node), channel_id)
                pipe.expire(self._index(node), self.ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not save call record", extra={"call_id": channel_id,
                                                             "error": str(exc)})

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
        try:
            await self._delete({(node, channel_id)})
        except (RedisError, OSError) as exc:
            log.warning("could not delete call record; retrying",
                        extra={"call_id": channel_id, "error": str(exc)})
            self._undeleted.add((node, channel_id))
            if self._retry is None or self._retry.done():
                self._retry = asyncio.ensure_future(self._retry_deletes())

    async def _delete(self, records: set[tuple[str, str]]) -> None:
        assert self.redis is not None
        async with self.redis.pipeline(transaction=True) as pipe:
            for node, channel_id in records:
                pipe.delete(self._key(node, channel_id))
                pipe.srem(self._index(node), channel_id)
            await pipe.execute()

    async def _retry_deletes(self) -> None:
        delay = RETRY_MIN
        while self._undeleted:
            await asyncio.sleep(delay)
            batch = set(self._undeleted)
            try:
                await self._delete(batch)
            except (RedisError, OSError):
                delay = min(RETRY_MAX, delay * 2)
                continue
            self._undeleted -= batch
            log.info("call records deleted after a Redis outage", extra={"count": len(batch)})

    async def close(self) -> None:
        """Stop retrying (at shutdown; the next worker's re-adoption removes what is left)."""
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
