"""The queue runtime with real Redis: a worker's view (wrapped flows, delivered events),
agents through AgentControl, leases across workers, definitions from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from appserver.devkit.embedded import free_port
from appserver.queues import config as queue_config
from appserver.queues.agent_control import AgentControl
from appserver.queues.caller_flow import QUEUED_VARIABLE, Join
from appserver.queues.model import (
    AgentConfig,
    CallStatus,
    Member,
    QueueConfig,
    QueueConfigError,
)
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import STATS_CHANNEL, Op, QueueError, QueueStore
from appserver.shells import aio as aio_shell
from appserver.shells.green import run
from ivr.calls import (
    AgentAssigned,
    AgentRequest,
    Answer,
    CallFlow,
    CallInfo,
    Command,
    Dial,
    DialResult,
    Dtmf,
    EndDial,
    Enqueue,
    Event,
    Hangup,
    Hold,
    HungUp,
    QueueResult,
    QueueUpdate,
    SetVariable,
    StartMoh,
    Unhold,
)

T = TypeVar("T")


class Ivr:
    def __init__(self, queue: str = "support", priority: int = 0) -> None:
        self.queue, self.priority = queue, priority
        self.results: list[Event] = []

    @property
    def done(self) -> bool:
        return bool(self.results)

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), Enqueue(self.queue, self.priority)]

    def handle(self, event: Event) -> list[Command]:
        self.results.append(event)
        return [Hangup()]


class Worker:
    """Stands in for a driver: runs wrapped flows, records commands and delivered events."""

    def __init__(self) -> None:
        self.flows: dict[str, CallFlow] = {}
        self.ivrs: dict[str, Ivr] = {}
        self.commands: dict[str, list[Command]] = {}
        self.events: dict[str, list[Event]] = {}

    def deliver(self, call_id: str, event: Event) -> None:
        self.events.setdefault(call_id, []).append(event)
        self.commands[call_id] += self.flows[call_id].handle(event)

    def place(self, runtime: QueueRuntime, call_id: str,
              priority: int = 0, queue: str = "support") -> None:
        self.ivrs[call_id] = Ivr(queue, priority)
        self.flows[call_id] = runtime.wrap(self.ivrs[call_id])
        self.commands[call_id] = self.flows[call_id].start(
            CallInfo(call_id, "test", "+1555" + call_id[-4:], "9999"))


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def eventually(get: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     timeout: float = 5.0) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check(value := await get()):
        assert loop.time() < deadline, f"condition not met in time; last value {value!r}"
        await asyncio.sleep(0.02)
    return value


async def started_workers(client: aioredis.Redis, names: tuple[str, ...], *,
                          lease_seconds: float) -> list[tuple[Worker, QueueRuntime]]:
    """A worker and its started runtime per name (heartbeat every 50 ms)."""
    workers = []
    for name in names:
        worker = Worker()
        runtime = QueueRuntime(client, name, worker.deliver, lease_seconds=lease_seconds,
                               tick_seconds=0.05)
        await runtime.start()
        workers.append((worker, runtime))
    return workers


async def define(store: QueueStore, agents: dict[str, str], **queue: object) -> None:
    for name, kind in agents.items():
        await store.sync_agent(AgentConfig(name, kind=kind,  # type: ignore[arg-type]
                                           extension="2000" if kind == "sip" else ""))
    cfg = QueueConfig(name=str(queue.pop("name", "support")), **queue)  # type: ignore[arg-type]
    await store.sync_queue(cfg, [Member(a) for a in agents])


async def test_caller_waits_hears_position_and_reaches_a_browser_agent(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, wrapup_seconds=0)
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    agents = AgentControl(QueueStore(redis_client))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(STATS_CHANNEL)
    try:
        worker.place(rt, "call-0001")
        worker.place(rt, "call-0002", priority=5)
        await rt.drain()
        await until(lambda: QueueUpdate("support", 1, 0.0, 0) in worker.events["call-0002"])
        assert worker.commands["call-0001"] == [
            Answer(), SetVariable(QUEUED_VARIABLE, "support"), StartMoh("default")]
        await until(lambda: any(isinstance(e, QueueUpdate) and e.position == 2
                                for e in worker.events["call-0001"]))
        await agents.login("ann")
        status = await agents.status("ann")
        assert status is not None and status.state == "offered" and status.offer == "call-0002"
        assert (await agents.accept("ann", "call-0002")).ok
        await until(lambda: any(isinstance(e, AgentAssigned) for e in worker.events["call-0002"]))
        assert worker.commands["call-0002"][-1] == Dial("ann", kind="agent", timeout=20.0)
        worker.deliver("call-0002", DialResult("ann", "answered"))
        await rt.drain()
        assert worker.ivrs["call-0002"].results == [QueueResult("support", "answered", "ann")]
        # ann is free again (no wrap-up) and the next caller is offered to her.
        await eventually(lambda: agents.status("ann"),
                         lambda st: st is not None and st.offer == "call-0001")
        worker.deliver("call-0001", HungUp())
        await rt.drain()
        status = await agents.status("ann")
        assert status is not None and status.state == "available"
        stats = await store.stats("support")
        assert (stats.answered, stats.abandoned, stats.waiting) == (1, 1, 0)
        assert stats.agent_calls == {"ann": 1}
        message = None
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(timeout=2)
            assert message is not None
        published = json.loads(message["data"])
        assert published[0]["queue"] == "support"
    finally:
        await pubsub.aclose()
        await rt.stop()


async def test_full_queue_overflows_through_the_runtime(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, max_length=1, overflow_action="extension",
                 overflow_target="8000")
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    try:
        worker.place(rt, "call-0001")
        worker.place(rt, "call-0002")
        await rt.drain()
        assert worker.events["call-0002"] == [QueueResult("support", "overflow", "full")]
        assert worker.commands["call-0002"][-1].__class__.__name__ == "Transfer"
        assert worker.flows["call-0002"].done and not worker.flows["call-0001"].done
        # An unknown queue fails politely back to the IVR.
        worker.ivrs["call-0003"] = Ivr(queue="nope")
        worker.flows["call-0003"] = rt.wrap(worker.ivrs["call-0003"])
        worker.flows["call-0003"].start(CallInfo("call-0003", "test", "1", "2"))
        assert worker.ivrs["call-0003"].results == [QueueResult("nope", "failed", "no such queue")]
    finally:
        await rt.stop()


async def test_dead_worker_callers_are_reaped_and_the_line_moves(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "sip"}, wrapup_seconds=0)
    (dead, rt_dead), (live, rt_live) = await started_workers(redis_client, ("dead", "live"),
                                                            lease_seconds=0.3)
    try:
        dead.place(rt_dead, "call-dead")
        await rt_dead.drain()
        live.place(rt_live, "call-live")
        await rt_live.drain()
        await rt_dead.stop()  # the worker "dies": no leave, no more heartbeats
        agents = AgentControl(store)
        await agents.login("ann")
        st = await store.agent("ann")
        assert st is not None and (st.state, st.call) == ("on_call", "call-dead")
        # The dead worker's lease expires: its caller is reaped. ann might still be bridged
        # to it in the engine, so she is sent away instead of being offered another call.
        ann = await eventually(lambda: store.agent("ann"),
                               lambda s: s is not None and s.state == "away")
        assert ann is not None and ann.reason == "call_lost"
        stats = await store.stats("support")
        assert (stats.lost, stats.waiting) == (1, 1)
        await agents.set_available("ann")
        await until(lambda: any(isinstance(e, AgentAssigned) for e in live.events["call-live"]))
        assert live.commands["call-live"][-1] == Dial("2000", kind="extension", timeout=20.0)
    finally:
        await rt_live.stop()


async def test_a_worker_handed_a_dead_workers_callers_resumes_them_in_line(
    redis_client: aioredis.Redis,
) -> None:
    """The worker of two waiting callers dies; the engine hands both calls to another worker,
    which takes them over before starting their flows: hold music again (no menu, no second
    join), the same places in line, an offer ringing meanwhile stays. ann accepts it while
    the new worker has taken the caller over but not yet started its flow: the assignment
    waits for the flow (the heartbeats meanwhile do not withdraw the caller), which dials
    her. Nothing is reaped or counted twice."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, wrapup_seconds=0, ring_timeout=60)
    (dead, rt_dead), (new, rt_new) = await started_workers(redis_client, ("dead", "new"),
                                                          lease_seconds=0.5)

    async def take_over(call_id: str) -> None:
        info = CallInfo(call_id, "test", "+1555" + call_id[-4:], "9999",
                        variables={QUEUED_VARIABLE: "support"})
        taken = await rt_new.take_over(info)
        assert taken is not None and (taken.queue, taken.previous_owner) == ("support", "dead")

    def resume(call_id: str) -> None:
        new.place(rt_new, call_id)
        assert new.commands[call_id] == [StartMoh("default")]

    try:
        for call_id in ("call-0001", "call-0002"):
            dead.place(rt_dead, call_id)
        await rt_dead.drain()
        agents = AgentControl(store)
        await agents.login("ann")
        await eventually(lambda: store.agent("ann"),
                         lambda a: a is not None and a.offer == "call-0001")
        await rt_dead.stop()  # the worker "dies": no leave, no more heartbeats
        await take_over("call-0002")
        resume("call-0002")
        await until(lambda: QueueUpdate("support", 2, 0.0, 1) in new.events.get("call-0002", []))
        await take_over("call-0001")
        assert (await agents.accept("ann", "call-0001")).ok
        await asyncio.sleep(1.0)  # heartbeats, past the dead worker's lease
        resume("call-0001")
        await until(lambda: any(isinstance(e, AgentAssigned)
                                for e in new.events.get("call-0001", [])))
        assert isinstance(new.commands["call-0001"][-1], Dial)
        stats = await store.stats("support")
        assert (stats.joined, stats.lost, stats.waiting) == (2, 0, 1)
        assert new.ivrs["call-0001"].results == []  # the inner flow never restarted
        assert await rt_new.take_over(CallInfo("call-9999", "test", "+1", "9999")) is None
    finally:
        await rt_new.stop()


async def test_lease_lost_is_reported_to_the_call(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    worker = Worker()
    rt = QueueRuntime(redis_client, "slow", worker.deliver, lease_seconds=10, tick_seconds=0.05)
    await rt.start()
    try:
        worker.place(rt, "call-0001")
        await rt.drain()
        await store.reap(now=2**50)  # another worker decides our lease ran out
        await until(lambda: worker.ivrs["call-0001"].results != [])
        assert worker.ivrs["call-0001"].results == [QueueResult("support", "failed", "lease lost")]
    finally:
        await rt.stop()


def test_gevent_runtime_runs_the_same_steps(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    worker = Worker()
    rt = QueueRuntime(client, "gw", worker.deliver)
    run(rt.store.sync_agent(AgentConfig("bob", kind="sip", extension="3000")))
    run(rt.store.sync_queue(QueueConfig("support"), [Member("bob")]))
    run(rt.refresh_configs())
    run(rt.store.agent_action("bob", "login"))
    worker.place(rt, "call-0001")
    run(rt._action_once())  # Join: enqueue + match assigns bob (SIP) directly
    run(rt._inbox_once())
    assert worker.commands["call-0001"][-1] == Dial("3000", kind="extension", timeout=20.0)
    worker.deliver("call-0001", DialResult("3000", "no_answer"))
    run(rt._action_once())  # DialFailed: back in line, bob re-offered
    run(rt._inbox_once())
    worker.deliver("call-0001", DialResult("3000", "answered"))
    run(rt._action_once())
    assert worker.ivrs["call-0001"].results == [QueueResult("support", "answered", "bob")]
    run(rt.tick())
    stats = run(rt.store.stats("support"))
    assert stats.answered == 1 and run(rt.store.agent("bob")).no_answer == 0  # type: ignore[union-attr]
    client.close()


async def test_definitions_come_from_postgresql(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    store = QueueStore(redis_client)
    async with pg_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO queues (name, strategy, max_length, wrapup_seconds, required_skills)"
            " VALUES ('support', 'skills', 5, 7, '{\"billing\": 2}')")
        await conn.execute(
            "INSERT INTO agents (username, display_name, kind, extension, skills) VALUES"
            " ('ann', 'Ann', 'browser', NULL, '{\"billing\": 3}'),"
            " ('bob', 'Bob', 'sip', '1001', '{}')")
        await conn.execute(
            "INSERT INTO queue_members (queue_id, agent_id, tier, penalty)"
            " SELECT q.id, a.id, 2, 10 FROM queues q, agents a")
    watcher = asyncio.create_task(queue_config.watch(pg_pool, store, debounce=0.05))
    try:
        cfg = await eventually(lambda: store.queue_config("support"), lambda c: c is not None)
        assert cfg is not None and (cfg.strategy, cfg.max_length, cfg.wrapup_seconds) == (
            "skills", 5, 7)
        assert cfg.required_skills == {"billing": 2} and cfg.max_wait_seconds == 0
        bob = await store.agent("bob")
        assert bob is not None and bob.kind == "sip" and bob.queues == ("support",)
        async with pg_pool.acquire() as conn:
            await conn.execute("UPDATE queues SET strategy = 'ring_all' WHERE name = 'support'")
            await conn.execute("DELETE FROM agents WHERE username = 'bob'")
        await eventually(lambda: store.agent("bob"), lambda b: b is None)
        cfg = await store.queue_config("support")
        assert cfg is not None and cfg.strategy == "ring_all"
        members = await redis_client.hgetall(store.keys.members("support"))
        assert members == {"ann": "2:10"}
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_leave_when_empty_after_the_last_agent_logs_out(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, leave_when_empty=True, overflow_action="menu",
                 overflow_target="main")
    agents = AgentControl(store)
    await agents.login("ann")
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    try:
        # ann is offered the caller at once; she declines, so the caller keeps waiting.
        worker.place(rt, "call-0001")
        await rt.drain()
        assert worker.events["call-0001"][0] == QueueUpdate("support", 1, 0.0, 1)
        assert await agents.decline("ann", "call-0001")
        await asyncio.sleep(0.2)
        assert worker.ivrs["call-0001"].results == []
        await eventually(lambda: agents.status("ann"), lambda s: s is not None and s.offer != "")
        await agents.logout("ann")
        await until(lambda: worker.ivrs["call-0001"].results != [])
        assert worker.ivrs["call-0001"].results == [
            QueueResult("support", "overflow", "menu:main")]
        await rt.drain()
        stats = await store.stats("support")
        assert (stats.waiting, stats.overflowed) == (0, 1)
    finally:
        await rt.stop()


async def test_overflow_chain_into_another_queue_keeps_the_call(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client)
    await define(store, {}, name="backup")
    await define(store, {"ann": "browser"}, max_length=1, overflow_action="queue",
                 overflow_target="backup")
    await store.sync_queue(QueueConfig("backup"), [Member("ann")])
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    try:
        worker.place(rt, "call-0001")
        worker.place(rt, "call-0002")  # support is full: goes on to backup
        await rt.drain()
        await asyncio.sleep(0.2)  # a few ticks: the chained caller must not look lost
        assert worker.events["call-0002"] == [QueueResult("support", "overflow", "full"),
                                              QueueUpdate("backup", 1, 0.0, 0)]
        assert worker.commands["call-0002"][-1] == StartMoh("default")
        await AgentControl(store).login("ann")
        st = await store.agent("ann")
        assert st is not None and st.state == "offered"
        assert (await store.accept("ann", st.offer)).ok
        await until(lambda: any(isinstance(e, AgentAssigned)
                                for e in worker.events[st.offer]))
    finally:
        await rt.stop()


async def test_a_position_is_delivered_once_when_a_tick_sees_the_join_first(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Join's reply is slow (a loaded worker): ticks see the caller in Redis before it.
    The caller still gets its first position once, from the Join, not once per source."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    batch = rt.store.batch

    async def slow_reply(ops: list[Op[object]]) -> list[object]:
        results = await batch(ops)
        if any(op.script == "enqueue" for op in ops):
            await asyncio.sleep(0.2)  # a few ticks
        return results

    monkeypatch.setattr(rt.store, "batch", slow_reply)
    await rt.start()
    try:
        worker.place(rt, "call-0001")
        await rt.drain()
        await asyncio.sleep(0.2)
        assert worker.events["call-0001"] == [QueueUpdate("support", 1, 0.0, 0)]
    finally:
        await rt.stop()


async def test_a_rejected_definition_keeps_the_last_valid_one(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, strategy="fewest_calls")
    await define(store, {}, name="old")
    snap = queue_config.Snapshot(agents=[AgentConfig("ann")],
                                 errors=["queue support: strategy 'loudest' is not valid"])
    await queue_config.publish(store, snap)
    cfg = await store.queue_config("support")
    assert cfg is not None and cfg.strategy == "fewest_calls"  # kept, not dropped
    assert await store.queue_config("old") is None  # deleted in SQL: dropped


class MenuThenQueue(Ivr):
    """Like the IVR: records the menu path, then enqueues."""

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), SetVariable("ivr_menu_path", "main/support"), Enqueue(self.queue)]


async def test_the_ivr_path_reaches_the_queued_call(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    try:
        worker.ivrs["call-0001"] = MenuThenQueue()
        worker.flows["call-0001"] = rt.wrap(worker.ivrs["call-0001"])
        commands = worker.flows["call-0001"].start(CallInfo("call-0001", "test", "+1555", "9999"))
        assert SetVariable("ivr_menu_path", "main/support") in commands  # still reaches the engine
        await rt.drain()
        key = f"{store.prefix}call:call-0001"  # the queued call's hash (see lua/common.lua)
        assert await redis_client.hget(key, "menu_path") == "main/support"
    finally:
        await rt.stop()


@contextlib.asynccontextmanager
async def ann_has_a_caller(
    redis_client: aioredis.Redis,
) -> AsyncIterator[tuple[QueueStore, Worker, QueueRuntime, AgentControl]]:
    """call-0001 queued in support and taken by ann (wrap-up 30 s); a queue billing too."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, wrapup_seconds=30)
    await store.sync_queue(QueueConfig("billing", moh_class="billing"), [])
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    agents = AgentControl(QueueStore(redis_client))
    try:
        worker.place(rt, "call-0001")
        await rt.drain()
        await agents.login("ann")
        assert (await agents.accept("ann", "call-0001")).ok
        await until(lambda: any(isinstance(e, AgentAssigned) for e in worker.events["call-0001"]))
        yield store, worker, rt, agents
    finally:
        await rt.stop()


async def test_agent_holds_then_transfers_the_caller_to_another_queue(
    redis_client: aioredis.Redis,
) -> None:
    async with ann_has_a_caller(redis_client) as (store, worker, rt, agents):
        commands = worker.commands["call-0001"]

        assert await agents.hold("ann") == "call-0001"
        await until(lambda: commands[-1] == Hold("default"))
        assert await agents.hold("ann") == "call-0001"  # already held: nothing sent twice
        assert await agents.unhold("ann") == "call-0001"
        await until(lambda: commands[-1] == Unhold())
        assert worker.events["call-0001"].count(AgentRequest("hold")) == 1

        for bad in ("menu:main", "extension:12a"):
            with pytest.raises(QueueError, match="transfer to"):
                await agents.transfer("ann", bad)
        with pytest.raises(QueueConfigError):
            await agents.transfer("ann", "queue:")
        with pytest.raises(QueueError, match="no such queue"):
            await agents.transfer("ann", "queue:nope")

        assert await agents.transfer("ann", "queue:billing") == "call-0001"
        await until(lambda: commands[-1] == EndDial())
        with pytest.raises(QueueError, match="already being transferred"):
            await agents.hold("ann")
        worker.deliver("call-0001", DialResult("ann", "answered"))  # the agent's leg ended
        await rt.drain()
        assert commands[-1] == StartMoh("billing")  # waiting in billing now
        status = await agents.status("ann")
        assert status is not None and status.state == "wrap_up" and status.call == ""
        await until(lambda: any(isinstance(e, QueueUpdate) and e.queue == "billing"
                                for e in worker.events["call-0001"]))
        assert (await store.stats("support")).answered == 1
        assert (await store.stats("billing")).waiting == 1
        with pytest.raises(QueueError, match="not connected"):
            await agents.hold("ann")


async def test_a_tick_between_a_transferred_callers_two_entries_loses_nothing(
    redis_client: aioredis.Redis,
) -> None:
    """An agent's transfer to another queue ends the caller's entry (Finish), then makes the
    new one (Join): two round trips. A tick sent before the first that reads Redis between
    them does not find the caller: no lost lease, the caller waits on in billing (CI once
    hung the caller up here with "lease lost")."""
    async with ann_has_a_caller(redis_client) as (store, worker, rt, agents):
        commands = worker.commands["call-0001"]
        assert await agents.transfer("ann", "queue:billing") == "call-0001"
        await until(lambda: commands[-1] == EndDial())
        rt.tick_seconds = 3600  # from now on only the ticks below
        await asyncio.sleep(0.3)

        real_tick, submit = rt.store.tick, rt._submit
        may_read, have_read, may_reply = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def tick_in_the_gap(owner: str, lease_ms: int = 15000) -> list[CallStatus]:
            await may_read.wait()
            statuses = await real_tick(owner, lease_ms)
            have_read.set()
            await may_reply.wait()
            return statuses

        held: list[Join] = []
        rt.store.tick = tick_in_the_gap  # type: ignore[method-assign]
        rt._submit = lambda a: held.append(a) if isinstance(a, Join) else submit(a)  # type: ignore[method-assign]
        ticking = asyncio.create_task(rt.tick())
        await asyncio.sleep(0)  # the tick is sent: the caller is in support, with ann
        worker.deliver("call-0001", DialResult("ann", "answered"))  # the agent's leg ended
        await rt.drain()
        assert [type(a) for a in held] == [Join]  # Finish landed, the Join not yet
        may_read.set()
        await have_read.wait()  # the tick read Redis between the two entries
        for action in held:
            submit(action)
        await rt.drain()
        may_reply.set()
        await ticking

        assert worker.ivrs["call-0001"].results == []
        assert commands[-1] == StartMoh("billing")
        rt.store.tick = real_tick  # type: ignore[method-assign]
        await rt.tick()
        assert worker.events["call-0001"][-1] == QueueUpdate("billing", 1, 0.0, 0)
        assert (await store.stats("billing")).waiting == 1


# ---------------------------------------------------------------- callers the worker no longer has
# Reproduce the ghost callers found after Redis stalls and restarts (see also
# tests/test_queue_outages.py): a caller this worker owns in Redis but has no flow for.


async def test_a_caller_the_worker_no_longer_has_is_withdrawn(
    redis_client: aioredis.Redis,
) -> None:
    """A Join that landed after the runtime gave up on it (Redis stalled past the socket
    timeout) left a caller owned by this worker with no flow behind it; the heartbeat renewed
    its lease for ever and agents were offered it. The tick withdraws it: ann's offer is
    withdrawn (available, not counted as missed), the record is gone, counted lost."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, wrapup_seconds=30)
    await AgentControl(store).login("ann")
    await store.enqueue("support", "ghost", "w1")
    await store.match("support")
    assert (await store.agent("ann")).offer == "ghost"  # type: ignore[union-attr]
    rt = QueueRuntime(redis_client, "w1", Worker().deliver, tick_seconds=0.05)
    await rt.start()
    try:
        ann = await eventually(lambda: store.agent("ann"),
                               lambda s: s is not None and s.state == "available")
        assert ann is not None and (ann.offer, ann.no_answer) == ("", 0)
        assert not await redis_client.exists(f"{store.prefix}call:ghost")
        stats = await store.stats("support")
        assert (stats.lost, stats.waiting) == (1, 0)
    finally:
        await rt.stop()


async def test_an_agent_who_takes_a_caller_the_worker_no_longer_has_is_freed(
    redis_client: aioredis.Redis,
) -> None:
    """alice went on_call into an empty room: she accepted a ghost and its worker, told of
    the assignment, ignored it. Now the worker withdraws the caller at once (no tick
    needed): the agent is available again, without wrap-up (the call never connected)."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, wrapup_seconds=30)
    rt = QueueRuntime(redis_client, "w1", Worker().deliver, tick_seconds=60)
    await rt.start()
    try:
        await until(lambda: rt._ticks == 1)  # the next tick is a minute away
        await store.enqueue("support", "ghost", "w1")
        await AgentControl(store).login("ann")
        assert (await store.accept("ann", "ghost")).ok
        ann = await eventually(lambda: store.agent("ann"),
                               lambda s: s is not None and s.state == "available")
        assert ann is not None and (ann.call, ann.wrapup_until_ms) == ("", 0)
        stats = await store.stats("support")
        assert (stats.lost, stats.answered, stats.waiting) == (1, 0, 0)
    finally:
        await rt.stop()


async def test_a_tick_read_before_a_callback_request_landed_does_not_withdraw_it(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick reads the caller as this worker's; then the caller confirms a callback, whose
    RequestCallback lands (the entry is nobody's now: a callback) and drops the caller's
    flow, all before the tick's reply is handled (a loaded worker). That stale reply must
    not withdraw the callback: it used to ("withdrawing a caller this worker no longer
    has", counted lost), and the customer was never called back."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, callback_key="5")
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=60)
    await rt.start()
    try:
        await until(lambda: rt._ticks == 1)  # the next tick is a minute away
        worker.place(rt, "call-0001")
        await rt.drain()
        worker.deliver("call-0001", Dtmf("5"))  # the callback key: confirm the number
        tick, read = rt.store.tick, asyncio.Event()

        async def stale_tick(owner: str, lease_ms: int = 15000,
                             now: int | None = None) -> list[CallStatus]:
            statuses = await tick(owner, lease_ms, now)  # the caller is still ours here
            read.set()
            await until(lambda: "call-0001" not in rt.flows)  # its callback landed first
            return statuses

        monkeypatch.setattr(rt.store, "tick", stale_tick)
        ticking = asyncio.ensure_future(rt.tick())
        await read.wait()
        worker.deliver("call-0001", Dtmf("1"))  # confirmed: RequestCallback
        await rt.drain()
        await ticking
        await rt.drain()
        stats = await store.stats("support")
        assert (stats.callbacks_requested, stats.callbacks_waiting, stats.lost) == (1, 1, 0)
        assert await store.queued_call("call-0001") is not None
    finally:
        await rt.stop()


async def test_an_assignment_from_a_queue_the_caller_left_is_not_dialled(
    redis_client: aioredis.Redis,
) -> None:
    """The caller overflowed from billing into support; an assignment from billing still in
    the inbox is not dialled in support (the Leave from billing frees that agent)."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    try:
        worker.place(rt, "call-0001")
        await rt.drain()
        stale = {"type": "assigned", "call": "call-0001", "queue": "billing", "agent": "bob",
                 "target": "bob", "kind": "browser"}
        await redis_client.rpush(store.keys.inbox("w1"), json.dumps(stale))
        await eventually(lambda: redis_client.llen(store.keys.inbox("w1")), lambda n: n == 0)
        await asyncio.sleep(0.1)
        assert not any(isinstance(e, AgentAssigned) for e in worker.events["call-0001"])
        assert not any(isinstance(c, Dial) for c in worker.commands["call-0001"])
    finally:
        await rt.stop()


def test_gevent_runtime_withdraws_callers_it_no_longer_has(redis_url: str) -> None:
    """The same two withdrawals on the gevent runtime (FreeSWITCH worker), stepped by hand:
    a ghost offered to ann is withdrawn by the tick; one bob accepted, by the inbox."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    rt = QueueRuntime(client, "gw", Worker().deliver)
    store = rt.store
    for agent in ("ann", "bob"):
        run(store.sync_agent(AgentConfig(agent)))
    run(store.sync_queue(QueueConfig("support", wrapup_seconds=30), [Member("ann")]))
    run(store.sync_queue(QueueConfig("sales", wrapup_seconds=30), [Member("bob")]))
    run(rt.refresh_configs())
    run(store.agent_action("ann", "login"))
    run(store.enqueue("support", "ghost-1", "gw"))
    run(store.match("support"))
    run(rt.tick())
    run(rt._action_once())
    ann = run(store.agent("ann"))
    assert ann is not None and (ann.state, ann.offer, ann.no_answer) == ("available", "", 0)
    run(store.enqueue("sales", "ghost-2", "gw"))
    run(store.agent_action("bob", "login"))
    run(store.match("sales"))
    assert run(store.accept("bob", "ghost-2")).ok
    run(rt._inbox_once())
    run(rt._action_once())
    bob = run(store.agent("bob"))
    assert bob is not None and (bob.state, bob.call) == ("available", "")
    assert [run(store.stats(q)).lost for q in ("support", "sales")] == [1, 1]
    assert not client.exists(f"{store.prefix}call:ghost-1", f"{store.prefix}call:ghost-2")
    client.close()


async def test_the_agent_hanging_up_ends_the_agent_leg_and_the_stay_answered(
    redis_client: aioredis.Redis,
) -> None:
    """Hang up in the console (AgentControl.end_call, even with LiveKit unreachable so the
    room lingers): the caller's entry ends in Redis at once and the worker is told to end the
    agent's leg; ticks meanwhile do not take the caller for a lost lease, and the stay ends
    answered once the engine reports the leg over."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, wrapup_seconds=0)
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=0.05)
    await rt.start()
    agents = AgentControl(store)
    try:
        worker.place(rt, "call-0001")
        await rt.drain()
        await agents.login("ann")
        assert (await agents.accept("ann", "call-0001")).ok
        commands = worker.commands["call-0001"]
        await until(lambda: isinstance(commands[-1], Dial))
        assert await agents.end_call("ann") == "available"
        await until(lambda: commands[-1] == EndDial())
        await asyncio.sleep(0.3)  # a few ticks while the engine ends the leg
        assert worker.ivrs["call-0001"].results == []
        worker.deliver("call-0001", DialResult("ann", "answered"))
        await rt.drain()
        assert worker.ivrs["call-0001"].results == [QueueResult("support", "answered", "ann")]
        assert (await store.stats("support")).answered == 1
    finally:
        await rt.stop()


async def test_live_callers_survive_a_redis_outage_longer_than_their_lease(
    scratch_dir: Path,
) -> None:
    """Redis restarts and stays down longer than a lease: every worker's leases have expired
    when it is back. The first worker to tick must not reap the other's live callers as
    lost (they would be failed and hung up): a runtime back from a gap waits a lease
    before reaping, long enough for every live worker to renew."""
    from test_faults import _ping, _redis_server

    port = free_port()
    server = _redis_server(scratch_dir / "redis", port)
    client = aio_shell.redis(f"redis://127.0.0.1:{port}/0")  # the Asterisk worker's client
    one, two = Worker(), Worker()
    runtimes = [QueueRuntime(client, name, w.deliver, lease_seconds=1, tick_seconds=0.05)
                for name, w in (("w1", one), ("w2", two))]
    try:
        await eventually(lambda: _ping(client), bool)
        store = QueueStore(client)
        await define(store, {"ann": "browser"})
        for rt in runtimes:
            await rt.start()
        one.place(runtimes[0], "call-0001")
        two.place(runtimes[1], "call-0002")
        for rt in runtimes:
            await rt.drain()
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        await asyncio.sleep(2.0)  # twice the lease
        server = _redis_server(scratch_dir / "redis", port)
        await eventually(lambda: _ping(client), bool)
        await asyncio.sleep(1.5)  # ticks, and reaping were it allowed
        assert (await store.stats("support")).waiting == 2
        assert one.ivrs["call-0001"].results == two.ivrs["call-0002"].results == []
    finally:
        for rt in runtimes:
            await rt.stop()
        await client.aclose()
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def spy_batches(monkeypatch: pytest.MonkeyPatch, rt: QueueRuntime,
                fail_matches: bool = False) -> list[list[str]]:
    """The scripts of each of ``rt``'s batches (round trips); ``fail_matches``: every
    match sent in a batch fails in Redis."""
    batches: list[list[str]] = []
    batch = rt.store.batch

    async def spied(ops: list[Op[object]]) -> list[object]:
        batches.append([op.script for op in ops])
        if fail_matches and all(op.script == "match" for op in ops):
            return [ResponseError("busy") for _ in ops]
        return await batch(ops)

    monkeypatch.setattr(rt.store, "batch", spied)
    return batches


@contextlib.asynccontextmanager
async def batching_runtime(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, fail_matches: bool = False,
) -> AsyncIterator[tuple[Worker, QueueRuntime, list[list[str]]]]:
    """A started runtime past its first tick, with its round trips recorded (spy_batches)."""
    worker = Worker()
    rt = QueueRuntime(redis_client, "w1", worker.deliver, tick_seconds=30)
    batches = spy_batches(monkeypatch, rt, fail_matches)
    await rt.start()
    try:
        await asyncio.sleep(0.1)  # the first tick is over
        yield worker, rt, batches
    finally:
        await rt.stop()


async def test_joins_queued_together_go_in_one_round_trip_each_answer_to_its_caller(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three callers join at once: one batch of three writes, then one match of the queue
    they joined. The first waits, the second finds the queue full, the third's queue was
    deleted in Redis meanwhile: each hears its own answer, the refusal (a QueueError) only
    the third."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"}, max_length=1)
    await define(store, {}, name="closing")
    async with batching_runtime(redis_client, monkeypatch) as (worker, rt, batches):
        await store.drop_queue("closing")  # the runtime still has its definition
        worker.place(rt, "call-0001")
        worker.place(rt, "call-0002")
        worker.place(rt, "call-0003", queue="closing")
        await rt.drain()
        assert batches == [["enqueue", "enqueue", "enqueue"], ["match"]]
        assert worker.events == {
            "call-0001": [QueueUpdate("support", 1, 0.0, 0)],
            "call-0002": [QueueResult("support", "overflow", "full")],
            "call-0003": [QueueResult("closing", "failed", "no_such_queue")],
        }
        assert set(rt.flows) == {"call-0001"}


async def test_a_callers_second_write_waits_for_the_next_round_trip(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller joins and hangs up before its Join was sent, then another joins: the
    Leave (and what was queued after it) go in the next batch, so the Leave lands after
    the Join and the entry is gone."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    async with batching_runtime(redis_client, monkeypatch) as (worker, rt, batches):
        worker.place(rt, "call-0001")
        worker.deliver("call-0001", HungUp())
        worker.place(rt, "call-0002")
        await rt.drain()
        assert batches == [["enqueue"], ["match"], ["leave", "enqueue"], ["match"]]
        assert await store.queued_call("call-0001") is None
        assert [c.call_id for c in await store.queue_calls("support")] == ["call-0002"]
        assert (await store.stats("support")).abandoned == 1


async def test_a_match_failing_in_a_batch_is_left_to_the_tick(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The match after a join fails in Redis: the caller still waits (no failure told),
    and the next tick offers it to the free agent."""
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    await store.agent_action("ann", "login")
    runtime = batching_runtime(redis_client, monkeypatch, fail_matches=True)
    async with runtime as (worker, rt, batches):
        worker.place(rt, "call-0001")
        await rt.drain()
        assert batches == [["enqueue"], ["match"]]
        assert worker.events["call-0001"] == [QueueUpdate("support", 1, 0.0, 1)]
        ann = await store.agent("ann")
        assert ann is not None and (ann.state, ann.offer) == ("available", "")
        await rt.tick()
        ann = await store.agent("ann")
        assert ann is not None and (ann.state, ann.offer) == ("offered", "call-0001")
        assert not worker.ivrs["call-0001"].results
