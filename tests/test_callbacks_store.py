"""Callback in queue, in real Redis: a callback keeps its place, is matched and offered like
a caller (marked as a callback), claimed by exactly one worker, retried after busy with the
queue's spacing, fails after the last attempt, and becomes a live caller's entry when the
customer answers. Its history goes to a stream for PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from test_queues_store import T0, setup

from appserver.queues.model import CallbackDial, QueueConfig
from appserver.queues.runtime import DialOutcome, QueueRuntime
from appserver.queues.store import QueueError, QueueStore

CB = {"callback_key": "5", "callback_max_attempts": 2, "callback_retry_seconds": 60}


async def accepted_and_claimed(store: QueueStore, now: int) -> None:
    """c1 asks for a callback; ann is offered it, accepts, and worker w1 claims it."""
    await callback_waiting(store, now)
    await store.match("support", now=now + 100)
    await store.accept("ann", "c1", now=now + 200)
    await store.claim_callbacks("w1", 60_000, now=now + 300)


async def callback_waiting(store: QueueStore, now: int) -> None:
    """c1 and c2 wait; c1 asks for a callback at 5550100 and hangs up."""
    await store.enqueue("support", "c1", "w1", now=now, caller="5550100")
    await store.enqueue("support", "c2", "w1", now=now + 10, caller="5550200")
    assert await store.request_callback("c1", "5550100", now=now + 20) == 1


async def test_a_callback_keeps_its_place_and_is_offered_marked(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], login=False, **CB)  # type: ignore[arg-type]
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("callyard:q:agents")
    t = T0 + 10_000
    await callback_waiting(store, t)
    # No owner and no lease: no worker's heartbeat or death touches it.
    assert [s.call_id for s in await store.tick("w1", now=t + 30)] == ["c2"]
    assert await store.reap(now=t + 60_000) == ["c2"]
    stats = await store.stats("support", now=t + 100)
    assert (stats.waiting, stats.callbacks_waiting, stats.callbacks_requested) == (0, 1, 1)
    await store.agent_action("ann", "login", now=t + 200)
    offers = await store.match("support", now=t + 300)
    assert [(o.call_id, o.agent) for o in offers] == [("c1", "ann")]
    offer: dict[str, str] = {}
    for _ in range(20):  # the subscription's confirmation, state changes, then the offer
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg is not None and json.loads(msg["data"])["type"] == "offer":
            offer = json.loads(msg["data"])
            break
    assert offer["callback"] == "5550100" and offer["caller"] == "5550100"
    await pubsub.aclose()


async def test_exactly_one_worker_claims_an_accepted_callback(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await callback_waiting(store, t)
    await store.match("support", now=t + 100)
    assert (await store.accept("ann", "c1", now=t + 200)).ok
    claims = await asyncio.gather(*(store.claim_callbacks(f"w{i}", 60_000, now=t + 300)
                                     for i in range(5)))
    dials = [d for claim in claims for d in claim]
    assert [(d.entry, d.number, d.agent, d.attempt) for d in dials] == [
        ("c1", "5550100", "ann", 1)]
    assert (await store.stats("support", now=t + 300)).callbacks_dialing == 1
    # The claimer died: after the claim another worker dials again (attempt 2).
    assert await store.claim_callbacks("w9", 60_000, now=t + 30_000) == []
    again = await store.claim_callbacks("w9", 60_000, now=t + 60_301)
    assert [(d.entry, d.attempt) for d in again] == [("c1", 2)]


async def test_busy_then_retry_after_spacing_then_fail(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await accepted_and_claimed(store, t)
    r = await store.callback_result("c1", "busy", "USER_BUSY", now=t + 1000)
    assert (r.status, r.attempts, r.not_before_ms) == ("retry", 1, t + 61_000)
    ann = await store.agent("ann")
    assert ann is not None and ann.state == "available" and ann.no_answer == 0
    # Not offered again before the spacing: c2 (behind it) gets ann meanwhile.
    assert [o.call_id for o in await store.match("support", now=t + 2000)] == ["c2"]
    await store.decline("ann", "c2", now=t + 2100)
    assert (await store.stats("support", now=t + 2100)).callback_estimate >= 58.9
    assert [o.call_id for o in await store.match("support", now=t + 61_000)] == ["c1"]
    await store.accept("ann", "c1", now=t + 61_100)
    [dial] = await store.claim_callbacks("w1", 60_000, now=t + 61_200)
    assert dial.attempt == 2
    r = await store.callback_result("c1", "no_answer", "NO_ANSWER", now=t + 70_000)
    assert (r.status, r.attempts) == ("failed", 2)
    assert await store.queued_call("c1") is None
    stats = await store.stats("support", now=t + 70_000)
    assert (stats.callbacks_waiting, stats.callbacks_failed) == (0, 1)
    history = await redis_client.xrange("{callyard:q}:callbacks:history")
    events = [(f["event"], f.get("outcome", "")) for _, f in history]
    assert events == [("requested", ""), ("dialing", ""), ("attempt", "busy"),
                      ("dialing", ""), ("attempt", "no_answer"), ("failed", "no_answer")]


async def test_answered_callback_becomes_the_live_callers_entry(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await accepted_and_claimed(store, t)
    assert (await store.callback_result("c1", "answered", now=t + 5000)).status == "answered"
    for _ in range(2):  # a repeat gives the same answer
        got = await store.callback_answered("c1", "leg-1", "w2", now=t + 5100)
        assert (got.queue, got.state, got.agent, got.target, got.kind) == (
            "support", "assigned", "ann", "ann", "browser")
    assert await store.queued_call("c1") is None
    ann = await store.agent("ann")
    assert ann is not None and ann.call == "leg-1"
    assert [s.call_id for s in await store.tick("w2", now=t + 5200)] == ["leg-1"]
    assert await store.finish("leg-1", now=t + 65_200)
    stats = await store.stats("support", now=t + 65_300)
    assert (stats.answered, stats.callbacks_answered, stats.callbacks_dialing) == (1, 1, 0)


async def test_customer_reaching_a_worker_before_the_dial_result(
        redis_client: aioredis.Redis) -> None:
    """The answered leg can reach a worker before the dialling worker hears ``+OK`` (real
    FreeSWITCH: the socket connects before the BACKGROUND_JOB): the attempt is recorded
    answered once, and the late result changes nothing."""
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await accepted_and_claimed(store, t)
    assert (await store.callback_answered("c1", "leg-1", "w2", now=t + 5000)).agent == "ann"
    assert (await store.callback_result("c1", "answered", now=t + 5100)).status == "gone"
    history = await redis_client.xrange("{callyard:q}:callbacks:history")
    events = [(f["event"], f.get("outcome", "")) for _, f in history]
    assert events == [("requested", ""), ("dialing", ""), ("attempt", "answered"),
                      ("answered", "")]
    assert await store.queued_call("leg-1") is not None


async def test_only_a_callback_being_dialled_can_be_answered(
        redis_client: aioredis.Redis) -> None:
    """A channel naming a callback that nobody is dialling (a forged variable, or a leg of
    an attempt already given up) takes nothing over."""
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await callback_waiting(store, t)
    with pytest.raises(QueueError):
        await store.callback_answered("c1", "leg-x", "w2", now=t + 100)
    await store.match("support", now=t + 200)
    await store.accept("ann", "c1", now=t + 300)
    await store.claim_callbacks("w1", 60_000, now=t + 400)
    await store.callback_result("c1", "busy", "USER_BUSY", now=t + 1000)
    with pytest.raises(QueueError):
        await store.callback_answered("c1", "leg-y", "w2", now=t + 1100)
    call = await store.queued_call("c1")
    assert call is not None and call.callback == "5550100" and call.state == "waiting"


class Dialer:
    """A worker's engine side: the ``engine`` nodes it is connected to (none: cut off);
    records the dials asked of it."""

    def __init__(self, nodes: list[str], engine: str = "asterisk") -> None:
        self.engine = engine
        self.nodes = nodes
        self.dials: list[CallbackDial] = []

    def nodes_up(self) -> list[str]:
        return self.nodes

    async def dial(self, dial: CallbackDial, config: QueueConfig,
                   variable: str) -> tuple[DialOutcome, str]:
        self.dials.append(dial)
        return "busy", "USER_BUSY"


async def test_a_worker_with_no_engine_leaves_callbacks_to_the_others(
        redis_client: aioredis.Redis) -> None:
    """A worker whose engine link is down claims nothing (it would only fail the attempt);
    a connected one dials."""
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    await callback_waiting(store, T0)
    await store.match("support", now=T0 + 100)
    await store.accept("ann", "c1", now=T0 + 200)
    cut_off, connected = Dialer([]), Dialer(["pbx1:8088"])
    for name, dialer in (("w-cut-off", cut_off), ("w-connected", connected)):
        runtime = QueueRuntime(redis_client, name, dialer=dialer)
        await runtime.refresh_configs()
        await runtime.tick()
        await asyncio.sleep(0.05)  # the dial runs beside the tick
    assert cut_off.dials == []
    assert [(d.entry, d.number, d.attempt) for d in connected.dials] == [("c1", "5550100", 1)]
