"""The supervisors' wallboard: live figures per queue and per agent, pushed to browsers.

Everything comes from Redis (the queue state every worker and API process shares), never
from one process's memory, so every API process shows the same numbers, before and after a
restart:

* per queue: callers waiting and the longest wait, agents by state (``QueueStore.stats``);
  "today" - since midnight in ``CALLYARD_WALLBOARD_TIMEZONE`` - from the 5-minute interval
  counters the queue scripts keep (``QueueStore.today``): joined, answered, abandoned,
  service level, average wait and handle time, calls per agent;
* per agent of a queue: state and since when, the caller and queue they are connected to,
  calls today;
* the callers in line (for the supervisor's actions);
* the last hour of waiting callers and service level: one sample per queue every
  :data:`SAMPLE_SECONDS`, taken by one API process at a time, kept in Redis
  (``QueueStore.add_sample``).

Each API process subscribes once to the queue events (``callyard:q:agents``,
``callyard:q:calls``, published by the Lua scripts whichever worker runs them) and, while a
wallboard is open, sends a fresh snapshot to its sockets within :data:`SETTLE` seconds of an
event (and at least every :data:`REFRESH` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from appserver.queues.model import QueuedCall, QueueStats
from appserver.queues.store import AGENTS_CHANNEL, CALLS_CHANNEL, QueueStore, now_ms
from appserver.shells.aio import cancel, honour_cancel

log = logging.getLogger("callyard.api.wallboard")

SAMPLE_SECONDS = 10
SERIES_SECONDS = 3600
SETTLE = 0.15  # seconds to let a burst of events settle before one snapshot
REFRESH = 5.0
BACKLOG = 4  # snapshots buffered per socket; an old one is dropped for a newer one


def day_start_ms(now: int, tz: ZoneInfo) -> int:
    """Midnight of ``now``'s day in ``tz``, in epoch milliseconds."""
    local = datetime.fromtimestamp(now / 1000, tz)
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def today_figures(counters: dict[str, int]) -> dict[str, Any]:
    """A queue's day as the wallboard shows it (service level: answered within the queue's
    target among answered + abandoned, None before the first such call)."""
    answered, abandoned = counters.get("answered", 0), counters.get("abandoned", 0)
    judged = answered + abandoned
    return {
        "joined": counters.get("joined", 0), "answered": answered, "abandoned": abandoned,
        "overflowed": counters.get("overflowed", 0), "exited": counters.get("exited", 0),
        "moved": counters.get("moved", 0), "ended": counters.get("ended", 0),
        "service_level": round(100.0 * counters.get("answered_in_sl", 0) / judged, 1)
        if judged else None,
        "avg_wait": round(counters.get("wait_ms", 0) / answered / 1000, 1) if answered else 0.0,
        "avg_handle": round(counters.get("handle_ms", 0) / answered / 1000, 1)
        if answered else 0.0,
    }


def _call(call: QueuedCall) -> dict[str, Any]:
    return {"call_id": call.call_id, "queue": call.queue, "state": call.state,
            "caller": call.caller, "agent": call.agent or None, "priority": call.priority,
            "joined_ms": call.joined_ms, "held": call.held,
            "callback": call.callback or None}  # a callback: the number to call back


def _queue(stats: QueueStats, today: dict[str, int], target: int) -> dict[str, Any]:
    return {"name": stats.queue, "waiting": stats.waiting, "longest_wait": stats.longest_wait,
            "agents": stats.agents, "service_level_seconds": target,
            "callbacks_waiting": stats.callbacks_waiting,
            "callbacks_dialing": stats.callbacks_dialing,
            "callback_estimate": stats.callback_estimate,
            "today": today_figures(today)}


class Wallboard:
    """Snapshots, the last-hour series and the push to open wallboards (one per process)."""

    def __init__(self, redis: aioredis.Redis, queues: QueueStore, timezone: str) -> None:
        self.redis = redis
        self.queues = queues
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone
        self._sockets: set[asyncio.Queue[dict[str, Any]]] = set()
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sampler_id = f"{os.getpid()}-{id(self)}"

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen(), name="wallboard-events"),
                       asyncio.create_task(self._push(), name="wallboard-push"),
                       asyncio.create_task(self._sample(), name="wallboard-sampler")]
        await asyncio.wait_for(self._ready.wait(), 5)

    async def stop(self) -> None:
        await cancel(self._tasks, 5)
        self._tasks = []

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(BACKLOG)
        self._sockets.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._sockets.discard(queue)

    # ------------------------------------------------------------------ figures

    async def snapshot(self, now: int | None = None) -> dict[str, Any]:
        """Every queue, agent and queued caller as of ``now``."""
        now = now or now_ms()
        since = day_start_ms(now, self.tz)
        queues: list[dict[str, Any]] = []
        calls_today: dict[str, int] = {}
        names = await self.queues.queue_names()
        for name in names:
            stats = await self.queues.stats(name, now)
            today = await self.queues.today(name, since, now)
            config = await self.queues.queue_config(name)
            queues.append(_queue(stats, today, config.service_level_seconds if config else 0))
            for field, n in today.items():
                if field.startswith("calls:"):
                    calls_today[field[6:]] = calls_today.get(field[6:], 0) + n
        calls = [_call(c) for c in await self.queues.calls_in(names)]
        by_id = {c["call_id"]: c for c in calls}
        agents = []
        for status in await self.queues.agents(await self.queues.agent_names()):
            if status is None or not status.queues:  # in no queue: nothing to supervise
                continue
            call = by_id.get(status.call or status.offer)
            agents.append({"username": status.username, "state": status.state,
                           "reason": status.reason, "since_ms": status.since_ms,
                           "call": call["call_id"] if call else None,
                           "caller": call["caller"] if call else None,
                           "queue": call["queue"] if call else None,
                           "calls_today": calls_today.get(status.username, 0),
                           "queues": list(status.queues)})
        return {"type": "snapshot", "now_ms": now, "timezone": self.timezone,
                "day_start_ms": since, "queues": queues, "agents": agents, "calls": calls}

    async def series(self, now: int | None = None) -> dict[str, list[list[Any]]]:
        """The last hour's samples per queue: ``[t_ms, waiting, service_level]``."""
        oldest = (now or now_ms()) - SERIES_SECONDS * 1000
        return {name: await self.queues.samples(name, oldest)
                for name in await self.queues.queue_names()}

    async def take_sample(self, now: int | None = None) -> None:
        """Append every queue's waiting callers and service level today to its series."""
        now = now or now_ms()
        since = day_start_ms(now, self.tz)
        for name in await self.queues.queue_names():
            stats = await self.queues.stats(name, now)
            level = today_figures(await self.queues.today(name, since, now))["service_level"]
            await self.queues.add_sample(name, [now, stats.waiting, level],
                                         keep=SERIES_SECONDS // SAMPLE_SECONDS + 1,
                                         ttl_seconds=2 * SERIES_SECONDS)

    # ------------------------------------------------------------------ loops

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(AGENTS_CHANNEL, CALLS_CHANNEL)
                self._ready.set()
                self._changed.set()  # events may have been missed while unsubscribed
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._changed.set()
            except (RedisError, OSError) as exc:
                honour_cancel()
                log.error("wallboard events lost; resubscribing", extra={"error": str(exc)})
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _push(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REFRESH)
            if not self._sockets:
                self._changed.clear()
                continue
            await asyncio.sleep(SETTLE)
            self._changed.clear()
            try:
                snapshot = await self.snapshot()
            except (RedisError, OSError) as exc:
                honour_cancel()
                log.warning("wallboard snapshot failed", extra={"error": str(exc)})
                await asyncio.sleep(1)
                continue
            for queue in list(self._sockets):
                if queue.full():
                    queue.get_nowait()  # a slow client gets the newest figures, not all
                queue.put_nowait(snapshot)

    async def _sample(self) -> None:
        while True:
            started = time.monotonic()
            try:
                if await self.queues.take_sample_turn(self._sampler_id, SAMPLE_SECONDS - 0.5):
                    await self.take_sample()
            except (RedisError, OSError) as exc:
                honour_cancel()
                log.warning("wallboard sample skipped", extra={"error": str(exc)})
            await asyncio.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - started)))
