"""The wallboard's loops end when asked to, even when a cancel comes out of a Redis call as a
connection error (redis-py while Redis goes away): CI once hung at the end of the test session
on a sampler that had swallowed its cancel and went on retrying."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from appserver.api.wallboard import Wallboard


class SwallowingQueues:
    """``take_sample_turn`` as redis-py answered while Redis went away: the cancel that landed
    inside it came out as a connection error."""

    async def take_sample_turn(self, sampler: str, seconds: float) -> bool:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None
        return False


async def test_the_wallboard_stops_when_redis_swallows_the_cancel(
    redis_client: aioredis.Redis,
) -> None:
    board = Wallboard(redis_client, SwallowingQueues(), "UTC")  # type: ignore[arg-type]
    await board.start()
    tasks = list(board._tasks)
    await asyncio.sleep(0.1)  # the sampler waits inside take_sample_turn
    started = time.monotonic()
    await board.stop()
    assert time.monotonic() - started < 2
    assert all(task.done() for task in tasks)
