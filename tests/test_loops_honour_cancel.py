"""Loops that catch Redis connection errors and retry end when asked to, even when a cancel
comes out of a Redis call as a connection error (redis-py while Redis goes away): CI once hung
at the end of the test session on a wallboard sampler that had swallowed its cancel and went
on retrying. Each loop below calls ``appserver.shells.aio.honour_cancel`` for that."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from appserver.agents.rooms import CallRooms
from appserver.api.console_hub import AgentHub
from appserver.api.wallboard import Wallboard
from appserver.metrics import RedisStatsPoller
from appserver.queues.store import QueueStore

GONE = "Connection closed by server."


def going_away(call: Callable[..., Awaitable[Any]],
               entered: asyncio.Event) -> Callable[..., Awaitable[Any]]:
    """``call`` as redis-py answers it the first time, while Redis goes away: no reply, and
    the cancel that lands in it comes out as a connection error. Later calls reach Redis."""

    async def hung(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise RedisConnectionError(GONE) from None
        return await call(*args, **kwargs)

    return hung


async def end_for_good(task: asyncio.Task[Any]) -> None:
    """Cleanup, for when a loop swallowed its cancel: a cancel that lands elsewhere ends it."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.2)


class SwallowingQueues:
    """``take_sample_turn`` as redis-py answered while Redis went away: the cancel that landed
    inside it came out as a connection error."""

    async def take_sample_turn(self, sampler: str, seconds: float) -> bool:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RedisConnectionError(GONE) from None
        return False


async def test_the_wallboard_stops_when_redis_swallows_the_cancel(
    redis_client: aioredis.Redis,
) -> None:
    board = Wallboard(redis_client, SwallowingQueues(), "UTC")  # type: ignore[arg-type]
    await board.start()
    tasks = list(board._tasks)
    await asyncio.sleep(0.1)  # the sampler waits inside take_sample_turn
    started = time.monotonic()
    try:
        await board.stop()
        assert time.monotonic() - started < 2
        assert all(task.done() for task in tasks)
    finally:
        for task in tasks:
            await end_for_good(task)


class SwallowingPubSub(PubSub):
    """A real subscription whose wait for the next message turns a cancel into a connection
    error."""

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        try:
            return await super().parse_response(block, timeout)
        except asyncio.CancelledError:
            raise RedisConnectionError(GONE) from None


class SwallowingRedis(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> SwallowingPubSub:
        return SwallowingPubSub(self.connection_pool, **kwargs)


async def test_the_agent_hub_stops_when_redis_swallows_the_cancel(
    redis_client: aioredis.Redis,
) -> None:
    client = SwallowingRedis(connection_pool=redis_client.connection_pool)
    rooms = CallRooms(redis_client, "http://127.0.0.1:9", "key", "secret")
    hub = AgentHub(client, rooms, QueueStore(redis_client))
    await hub.start()  # subscribed
    task = hub._task
    assert task is not None
    await asyncio.sleep(0.1)  # the hub waits for the next event inside pubsub.listen()
    stopping = asyncio.create_task(hub.stop())
    try:
        done, _ = await asyncio.wait([stopping], timeout=2)
        assert done, "the hub went on resubscribing after it was cancelled"
        assert task.done()
    finally:
        await end_for_good(task)
        await stopping


async def test_the_room_janitor_stops_when_redis_swallows_the_cancel(
    redis_client: aioredis.Redis,
) -> None:
    rooms = CallRooms(redis_client, "http://127.0.0.1:9", "key", "secret")
    entered = asyncio.Event()
    rooms._claim_due = going_away(rooms._claim_due, entered)  # type: ignore[method-assign]
    rooms.start_janitor()
    task = rooms._janitor
    assert task is not None
    await asyncio.wait_for(entered.wait(), 2)
    started = time.monotonic()
    try:
        await rooms.close()
        # (it used to end only after its next pause: a second)
        assert time.monotonic() - started < 0.5
        assert task.done()
    finally:
        await end_for_good(task)


async def test_the_metrics_poller_stops_when_redis_swallows_the_cancel(
    redis_client: aioredis.Redis,
) -> None:
    queues = QueueStore(redis_client)
    entered = asyncio.Event()
    queues.queue_names = going_away(queues.queue_names, entered)  # type: ignore[method-assign]

    async def no_backlog() -> tuple[int, int]:
        return 0, 0

    poller = RedisStatsPoller(queues, no_backlog, interval=0.1)
    poller.start()
    task = poller._task
    assert task is not None
    await asyncio.wait_for(entered.wait(), 2)
    stopping = asyncio.create_task(poller.stop())
    try:
        done, _ = await asyncio.wait([stopping], timeout=2)
        assert done, "the poller went on polling after it was cancelled"
    finally:
        await end_for_good(task)
        await stopping
