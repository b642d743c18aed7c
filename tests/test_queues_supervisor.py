"""Supervisor operations on queue state in real Redis: the per-interval figures behind the
wallboard's "today", moving a waiting caller or raising their priority (one script), and
hanging up a caller through its worker (or removing a stuck entry nobody owns)."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from test_queues_store import T0, setup

from appserver.queues.model import Member, QueueConfig
from appserver.queues.store import CALLS_CHANNEL, QueueError

MIN = 60_000


async def test_today_sums_the_intervals_since_the_given_start(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], service_level_seconds=20)
    t = T0 + 10 * MIN
    await store.enqueue("support", "c1", "w1", now=t)
    assert (await store.match("support", now=t + 5_000))[0].agent == "ann"
    assert (await store.accept("ann", "c1", now=t + 5_000)).ok  # 5 s: within 20 s
    assert await store.finish("c1", now=t + 65_000)  # 60 s talk
    await store.enqueue("support", "c2", "w1", now=t + 10 * MIN)
    await store.leave("c2", "abandoned", now=t + 11 * MIN)
    await store.enqueue("support", "c3", "w1", now=t + 12 * MIN)
    await store.leave("c3", "ended", now=t + 12 * MIN + 1)

    today = await store.today("support", since_ms=t - MIN, now=t + 13 * MIN)
    assert today == {"joined": 3, "answered": 1, "answered_in_sl": 1, "abandoned": 1,
                     "ended": 1, "wait_ms": 5_000, "handle_ms": 60_000, "calls:ann": 1}
    # Only the intervals from the start on: c1 (10 min earlier) is left out.
    later = await store.today("support", since_ms=t + 9 * MIN, now=t + 13 * MIN)
    assert later == {"joined": 2, "abandoned": 1, "ended": 1}
    assert await store.today("support", since_ms=t + 20 * MIN, now=t + 30 * MIN) == {}
    # The queue's running counters count the supervisor's hang-up apart from abandons.
    stats = await store.stats("support", now=t + 13 * MIN)
    assert stats.abandoned == 1 and stats.joined == 3


async def test_move_keeps_the_join_time_and_tells_the_owner(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], login=False)
    await store.sync_queue(QueueConfig(name="billing"), [Member("ann")])
    for i, call in enumerate(("b1", "b2", "b3")):
        await store.enqueue("billing", call, "w2", now=T0 + i * 1000)
    await store.enqueue("support", "s1", "w1", priority=3, now=T0 + 1500, caller="+1555")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(CALLS_CHANNEL)

    moved = await store.move_call("s1", "billing", now=T0 + 5000)
    assert (moved.old_queue, moved.queue, moved.old_priority, moved.priority) == \
        ("support", "billing", 3, 3)
    # Priority 3 first in billing, then FIFO by the original join times.
    assert [c.call_id for c in await store.queue_calls("billing")] == ["s1", "b1", "b2", "b3"]
    assert await store.queue_calls("support") == []
    call = await store.queued_call("s1")
    assert call is not None and call.joined_ms == T0 + 1500 and call.caller == "+1555"
    assert json.loads(await redis_client.lpop("{callyard:q}:worker:w1:inbox")) == {
        "type": "moved", "call": "s1", "queue": "billing", "priority": 3}
    # Raising priority alone reorders within the queue.
    await store.move_call("b3", priority=9, now=T0 + 6000)
    assert [c.call_id for c in await store.queue_calls("billing")] == ["b3", "s1", "b1", "b2"]
    assert (await store.stats("billing", now=T0 + 7000)).longest_wait == 7.0

    today = await store.today("support", since_ms=T0 - MIN, now=T0 + 7000)
    assert today["moved"] == 1
    assert (await store.today("billing", since_ms=T0 - MIN, now=T0 + 7000))["joined"] == 4
    seen = []
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if msg:
            seen.append(msg["data"])
    assert "support" in seen and "billing" in seen
    await pubsub.aclose()


async def test_move_withdraws_offers_and_refuses_what_it_cannot(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob"])
    await store.sync_queue(QueueConfig(name="billing"), [])
    await store.enqueue("support", "c1", "w1", now=T0 + 5000)
    assert (await store.match("support", now=T0 + 5001))[0].agent == "ann"
    await store.move_call("c1", "billing", now=T0 + 6000)
    ann = await store.agent("ann")
    assert ann is not None and ann.state == "available" and ann.offer == "" \
        and ann.no_answer == 0
    assert not (await store.accept("ann", "c1", now=T0 + 6001)).ok

    with pytest.raises(QueueError) as err:
        await store.move_call("c1", "nowhere", now=T0 + 7000)
    assert err.value.code == "no_such_queue"
    with pytest.raises(QueueError) as err:
        await store.move_call("gone", "support", now=T0 + 7000)
    assert err.value.code == "no_entry"
    await store.move_call("c1", "support", now=T0 + 7000)
    assert (await store.match("support", now=T0 + 7001))[0].agent in ("ann", "bob")
    offers = {a: (await store.agent(a)) for a in ("ann", "bob")}
    agent = next(a for a, st in offers.items() if st is not None and st.offer == "c1")
    assert (await store.accept(agent, "c1", now=T0 + 7002)).ok
    with pytest.raises(QueueError) as err:
        await store.move_call("c1", "billing", now=T0 + 8000)
    assert err.value.code == "connected"
    with pytest.raises(ValueError):
        await store.move_call("c1", priority=100)


async def test_hang_up_goes_to_the_owner_or_removes_a_stuck_entry(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], login=False)
    await store.enqueue("support", "live", "w1", now=T0 + 5000, lease_ms=15_000)
    assert await store.hang_up("live", now=T0 + 6000) == "sent"
    assert json.loads(await redis_client.lpop("{callyard:q}:worker:w1:inbox")) == {
        "type": "hangup", "call": "live"}
    assert await store.queued_call("live") is not None  # the worker's flow leaves the queue

    # A connected caller whose worker died: the entry goes now, the agent goes away.
    await store.enqueue("support", "stuck", "w9", priority=5, now=T0 + 5000, lease_ms=15_000)
    await store.agent_action("ann", "login", now=T0 + 5000)
    assert (await store.match("support", now=T0 + 5001))[0].agent == "ann"
    assert (await store.accept("ann", "stuck", now=T0 + 5002)).ok
    assert await store.hang_up("stuck", now=T0 + 30_000) == "removed"
    assert await store.queued_call("stuck") is None
    ann = await store.agent("ann")
    assert ann is not None and (ann.state, ann.reason, ann.call) == ("away", "call_lost", "")
    with pytest.raises(QueueError) as err:
        await store.hang_up("stuck", now=T0 + 31_000)
    assert err.value.code == "no_entry"
