"""A queued caller on Asterisk: the queue runtime (real Redis) wraps the call flow, a SIP agent
logs in and accepts, the worker dials the agent's phone through ARI and bridges them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import QueueStore
from appserver.settings import AriNode
from ivr.calls import Answer, CallFlow, CallInfo, Command, Enqueue, Event, Hangup, QueueResult


class EnqueueFlow:
    """Answers and queues the caller; hangs up on the queue's result."""

    def __init__(self) -> None:
        self.results: list[Event] = []

    @property
    def done(self) -> bool:
        return bool(self.results)

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), Enqueue("support")]

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, QueueResult):
            self.results.append(event)
            return [Hangup()]
        return []


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_queued_caller_reaches_a_sip_agent(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("ann", kind="sip", extension="1001"))
    await store.sync_queue(QueueConfig(name="support", wrapup_seconds=0), [Member("ann")])
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1),
                       endpoints=[SimEndpoint("PJSIP", "1001", talk_seconds=0.3)])
    await sim.start()
    flows: dict[str, EnqueueFlow] = {}
    runtime: QueueRuntime | None = None

    def factory(info: CallInfo) -> CallFlow:
        assert runtime is not None
        flows[info.call_id] = EnqueueFlow()
        return runtime.wrap(flows[info.call_id])

    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], factory, redis=redis_client)
    runtime = QueueRuntime(redis_client, "asterisk-test", worker.deliver, tick_seconds=0.05)
    await runtime.start()
    await worker.start()
    try:
        await worker.wait_connected()
        call = await sim.place_call("9999")
        await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default")
        agents = AgentControl(store)
        await agents.login("ann")  # a SIP agent is rung at once (no accept step)
        await call.transcript.wait_for(lambda e: e.kind == "bridged" and e.detail == "1001")
        await call.wait_ended()
        await until(lambda: bool(flows[call.call_id].results))
        assert flows[call.call_id].results[0].outcome == "answered"  # type: ignore[attr-defined]
        lines = call.transcript.lines()
        assert lines.index("dialed 1001") < lines.index("bridged 1001")
        assert lines[-1] == "hangup NORMAL_CLEARING app"
        assert not sim.bridges
        await runtime.drain()
        stats = await store.stats("support")
        assert stats.answered == 1 and stats.agent_calls == {"ann": 1}
    finally:
        await worker.stop()
        await runtime.stop()
        await sim.stop()
