"""Live agent events for the console: one Redis subscription per API process, fanned out
to each agent's WebSockets.

Events on ``callyard:q:agents`` (published by the queue scripts) are ``state``, ``offer``
and ``offer_withdrawn``. Offers are enriched with what the console shows: the caller's
number, the IVR path (``menu_path`` on the queued call, from the IVR's ``ivr_menu_path``) and when
the caller joined the queue. When an agent leaves ``on_call``, the call's LiveKit room is
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from appserver.agents.rooms import CallRooms
from appserver.queues.model import QueuedCall
from appserver.queues.store import AGENTS_CHANNEL, QueueStore
from appserver.shells.aio import honour_cancel

log = logging.getLogger("callyard.api.console")

QUEUE_SIZE = 100  # events buffered per socket; past that the client is told to resync


async def offer_details(queues: QueueStore, call_id: str) -> dict[str, Any]:
    """What the console shows about an offered call."""
    call = await queues.queued_call(call_id)
    if call is None:  # the caller left meanwhile
        call = QueuedCall.from_redis(call_id, {})
    joined = call.joined_ms
    return {
        "call": call_id,
        "queue": call.queue,
        "caller": call.caller,
        "menu_path": list(call.menu_path),
        "callback": call.callback,  # a callback: accepting has Callyard call this number
        "joined_ms": joined,
        "waiting_seconds": round(max(0, time.time() * 1000 - joined) / 1000, 1) if joined else 0,
    }


class AgentHub:
    def __init__(self, redis: aioredis.Redis, rooms: CallRooms, queues: QueueStore) -> None:
        self.redis = redis
        self.rooms = rooms
        self.queues = queues
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agent-hub")
        await asyncio.wait_for(self._ready.wait(), 5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, agent: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[agent].add(queue)
        return queue

    def unsubscribe(self, agent: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers[agent].discard(queue)
        if not self._subscribers[agent]:
            del self._subscribers[agent]

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(AGENTS_CHANNEL)
                self._ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._dispatch(json.loads(message["data"]))
            except (RedisError, OSError) as exc:
                honour_cancel()
                log.error("agent events lost; resubscribing", extra={"error": str(exc)})
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _dispatch(self, event: dict[str, Any]) -> None:
        agent = str(event.get("agent", ""))
        try:
            if event.get("type") == "state" and event.get("state") not in ("on_call", "offered"):
                room = await self.rooms.close_for(agent)
                if room:
                    event["room_closed"] = room
            if event.get("type") == "offer":
                event.update(await offer_details(self.queues, str(event.get("call", ""))))
        except Exception as exc:  # a LiveKit or Redis hiccup must not stop the event stream
            log.error("agent event handling failed", extra={"agent": agent, "error": str(exc)})
        for queue in list(self._subscribers.get(agent, ())):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a stalled client: drop its backlog, it re-reads status
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"type": "resync"})
