"""A supervisor's move and hang-up reach the worker that owns the caller (its inbox), and
the caller's flow carries them out: the new queue's music and announcements, or the end of
the call (the agent's leg first when connected)."""

from __future__ import annotations

import redis.asyncio as aioredis
from test_queues_runtime import define, eventually, started_workers, until

from appserver.queues.agent_control import AgentControl
from appserver.queues.caller_flow import QUEUED_VARIABLE
from appserver.queues.model import Member, QueueConfig
from appserver.queues.store import QueueStore
from ivr.calls import (
    AgentAssigned,
    EndDial,
    Hangup,
    QueueMoved,
    QueueUpdate,
    SetVariable,
    StartMoh,
    StartTimer,
    StopMoh,
    SupervisorHangup,
)


async def test_a_moved_caller_is_served_by_the_new_queue(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    [(worker, rt)] = await started_workers(redis_client, ("w1",), lease_seconds=15)
    try:
        worker.place(rt, "call-0001")
        await rt.drain()
        # A queue defined after the worker read its definitions: it reads them again.
        await store.sync_queue(QueueConfig("vip", moh_class="vip", announce_interval=30),
                               [])
        await store.move_call("call-0001", "vip", priority=7)
        commands = worker.commands["call-0001"]
        before = len(commands)
        await until(lambda: QueueMoved("vip", 7) in worker.events["call-0001"])
        assert StopMoh() in commands[before:]
        assert commands[-3:] == [SetVariable(QUEUED_VARIABLE, "vip"), StartMoh("vip"),
                                 StartTimer("queue:announce", 30.0)]
        await until(lambda: any(isinstance(e, QueueUpdate) and e.queue == "vip"
                                for e in worker.events["call-0001"]))
        # Served in the new queue: an agent of vip gets the caller.
        await store.sync_queue(QueueConfig("vip", moh_class="vip", announce_interval=30),
                               [Member("ann")])
        agents = AgentControl(store)
        await agents.login("ann")
        await eventually(lambda: agents.status("ann"),
                         lambda st: st is not None and st.offer == "call-0001")
        assert (await agents.accept("ann", "call-0001")).ok
        await until(lambda: any(isinstance(e, AgentAssigned) and e.queue == "vip"
                                for e in worker.events["call-0001"]))
    finally:
        await rt.stop()


async def test_a_supervisor_hangs_up_a_waiting_and_a_connected_caller(
        redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define(store, {"ann": "browser"})
    [(worker, rt)] = await started_workers(redis_client, ("w1",), lease_seconds=15)
    agents = AgentControl(store)
    try:
        worker.place(rt, "call-0001")
        worker.place(rt, "call-0002")
        await rt.drain()
        assert await store.hang_up("call-0002") == "sent"
        await until(lambda: worker.commands["call-0002"][-1] == Hangup())
        await rt.drain()
        assert await store.queued_call("call-0002") is None
        assert (await store.stats("support")).waiting == 1

        await agents.login("ann")
        assert (await agents.accept("ann", "call-0001")).ok
        await until(lambda: any(isinstance(e, AgentAssigned)
                                for e in worker.events["call-0001"]))
        assert await store.hang_up("call-0001") == "sent"
        await until(lambda: SupervisorHangup() in worker.events["call-0001"])
        assert worker.commands["call-0001"][-2:] == [EndDial(), Hangup()]
        await rt.drain()
        assert await store.queued_call("call-0001") is None
        status = await agents.status("ann")
        assert status is not None and status.state == "available"
        assert (await store.stats("support")).answered == 1
    finally:
        await rt.stop()
