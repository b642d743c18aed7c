"""The Asterisk worker's call records (``appserver.asterisk.callstore``) on a real Redis:
saves and deletions written in batches, one script per batch, in order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from appserver.asterisk import callstore
from appserver.asterisk.callstore import CallRecord, CallStore
from ivr.calls import CallInfo

NODE = "n1"
RECORD, INDEX = "callyard:asterisk:call:n1:", "callyard:asterisk:calls:n1:callyard"


def record(channel_id: str, owner: str = "") -> CallRecord:
    info = CallInfo(call_id=channel_id, engine="asterisk", caller="+15550001", called="9999",
                    node=NODE, caller_name="Ann", variables={"channel_name": "PJSIP/a-1"})
    return CallRecord(info, owner=owner, started_at=1_700_000_000.5)


class Counting:
    """Counts the store's batches (round trips) and fails the next ``fail`` of them."""

    def __init__(self, store: CallStore, fail: int = 0) -> None:
        self.batches: list[list[tuple[str, str]]] = []
        self.fail = fail
        self._write = store._write
        store._write = self  # type: ignore[method-assign]

    async def __call__(self, batch: list[Any]) -> None:
        self.batches.append([(c.channel_id, "s" if c.value else "d") for c in batch])
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("Redis is down (test)")
        await self._write(batch)


async def test_a_saved_record_is_in_redis_when_save_returns(redis_client: Redis) -> None:
    store = CallStore(redis_client, ttl=600)
    await store.save(NODE, "c1", record("c1"))
    assert await redis_client.exists(RECORD + "c1")
    assert 590 < await redis_client.ttl(RECORD + "c1") <= 600
    assert 590 < await redis_client.ttl(INDEX) <= 600
    assert await store.channel_ids(NODE) == {"c1"}
    assert await store.load(NODE, "c1") == record("c1")
    await store.delete(NODE, "c1")
    assert not await redis_client.exists(RECORD + "c1")
    assert await store.channel_ids(NODE) == set()
    await store.close()


async def test_changes_asked_together_go_in_one_round_trip_in_order(redis_client: Redis) -> None:
    store = CallStore(redis_client)
    counting = Counting(store)
    await store.save(NODE, "old", record("old"))
    counting.batches.clear()
    # 200 calls start, a leg is recorded and dropped, an old call ends, in one loop turn.
    await asyncio.gather(
        *(store.save(NODE, f"c{i}", record(f"c{i}")) for i in range(200)),
        store.save(NODE, "leg", record("leg", owner="c1")),
        store.delete(NODE, "leg"),
        store.delete(NODE, "old"),
    )
    assert len(counting.batches) == 1 and len(counting.batches[0]) == 203
    assert await store.channel_ids(NODE) == {f"c{i}" for i in range(200)}
    assert not await redis_client.exists(RECORD + "leg", RECORD + "old")
    assert (await store.load(NODE, "c7")) == record("c7")
    await store.close()


async def test_changes_asked_during_a_batch_follow_it(redis_client: Redis) -> None:
    """What is asked while a batch is on its way goes in the next one, after it: a record
    saved then deleted is gone, whichever batches they fell in."""
    store = CallStore(redis_client)
    counting = Counting(store)
    first = asyncio.ensure_future(store.save(NODE, "a", record("a")))
    await asyncio.sleep(0)  # the first batch is on its way
    second = [asyncio.ensure_future(store.delete(NODE, "a")),
              asyncio.ensure_future(store.save(NODE, "b", record("b")))]
    await asyncio.gather(first, *second)
    assert counting.batches == [[("a", "s")], [("a", "d"), ("b", "s")]]
    assert await store.channel_ids(NODE) == {"b"}
    assert not await redis_client.exists(RECORD + "a")
    await store.close()


async def test_a_cancelled_caller_still_gets_its_change_written(redis_client: Redis) -> None:
    """A call's task cancelled while its save waits (the worker stopping) does not lose the
    change nor hold up the others of its batch."""
    store = CallStore(redis_client)
    waiting = asyncio.ensure_future(store.save(NODE, "a", record("a")))
    other = asyncio.ensure_future(store.save(NODE, "b", record("b")))
    await asyncio.sleep(0)
    waiting.cancel()
    await other
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await store.close()
    assert await store.channel_ids(NODE) == {"a", "b"}


async def test_a_failed_batch_keeps_the_records_and_retries_the_deletions(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refuses a batch: its callers go on (nothing raised), its saves are logged as
    lost, its deletions leave the records in Redis until a retry lands."""
    monkeypatch.setattr(callstore, "RETRY_MIN", 0.05)
    store = CallStore(redis_client)
    await store.save(NODE, "ended", record("ended"))
    counting = Counting(store, fail=2)  # the batch and the first retry fail
    with caplog.at_level(logging.INFO, logger="appserver.asterisk.callstore"):
        await asyncio.gather(store.save(NODE, "new", record("new")),
                             store.delete(NODE, "ended"))
        assert await redis_client.exists(RECORD + "ended"), "a failed deletion lost the record"
        assert not await redis_client.exists(RECORD + "new")
        assert "could not save call records" in caplog.text
        assert "could not delete call records; retrying" in caplog.text
        for _ in range(100):
            if not await redis_client.exists(RECORD + "ended"):
                break
            await asyncio.sleep(0.02)
    assert not await redis_client.exists(RECORD + "ended")
    assert await store.channel_ids(NODE) == set()
    assert counting.batches[1:] == [[("ended", "d")], [("ended", "d")]]  # retried once more
    assert "call records deleted after a Redis outage" in caplog.text
    await store.close()


async def test_unreachable_redis_never_raises_to_the_call() -> None:
    # no retries: redis-py 8's own (10, backing off to 1 s) take ~4 s a call, near the 5 s
    # limits below, and CI's load pushed one past them
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                        retry=Retry(NoBackoff(), 0))
    store = CallStore(unreachable)
    await asyncio.wait_for(store.save(NODE, "a", record("a")), 5)
    await asyncio.wait_for(store.delete(NODE, "a"), 5)
    assert await store.load(NODE, "a") is None
    await store.close()  # stops the retries
    await unreachable.aclose()


async def test_without_redis_nothing_is_kept() -> None:
    store = CallStore(None)
    await store.save(NODE, "a", record("a"))
    await store.delete(NODE, "a")
    assert await store.load(NODE, "a") is None and await store.channel_ids(NODE) == set()
    await store.close()
