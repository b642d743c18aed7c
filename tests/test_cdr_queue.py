"""CDRs of queued callers on a real worker: the Asterisk worker and queue runtime (real
Redis) with the CDR wrapper around the queue wrapper, as ``callyard asterisk`` builds it."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from test_asterisk_queue import EnqueueFlow, until

from appserver.asterisk.worker import AsteriskWorker
from appserver.cdr.flow import CdrCalls
from appserver.cdr.record import CdrRecord
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import QueueStore
from appserver.settings import AriNode
from appserver.worker.pipeline import worker_pipeline


async def test_answered_and_abandoned_queue_calls(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("ann", kind="sip", extension="1001"))
    await store.sync_queue(QueueConfig(name="support", wrapup_seconds=0), [Member("ann")])
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1),
                       endpoints=[SimEndpoint("PJSIP", "1001", talk_seconds=0.3)])
    await sim.start()
    records: list[CdrRecord] = []
    cdrs = CdrCalls(records.append)
    queues = QueueRuntime(redis_client, "asterisk-cdr-test", tick_seconds=0.05)
    factory = worker_pipeline(lambda info: EnqueueFlow(), cdrs=cdrs, queues=queues,
                              livekit_sip_uri="sip:livekit.invalid")
    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], factory, redis=redis_client)
    await queues.start(worker.deliver)
    await worker.start()
    try:
        await worker.wait_connected()
        gives_up = await sim.place_call("9999", caller="+15550301")
        await gives_up.transcript.wait_for(lambda e: e.kind == "moh")
        await asyncio.sleep(0.4)
        await gives_up.hangup()
        waits = await sim.place_call("9999", caller="+15550302")
        await waits.transcript.wait_for(lambda e: e.kind == "moh")
        await asyncio.sleep(0.5)
        await AgentControl(store).login("ann")
        await waits.transcript.wait_for(lambda e: e.kind == "bridged" and e.detail == "1001")
        await waits.wait_ended()
        await until(lambda: len(records) == 2)
        by_caller = {r.caller: r for r in records}
        abandoned, answered = by_caller["+15550301"], by_caller["+15550302"]
        assert (abandoned.queue, abandoned.disposition, abandoned.agent) == (
            "support", "abandoned", None)
        assert abandoned.wait_seconds is not None and 0.35 <= abandoned.wait_seconds < 3
        assert (answered.queue, answered.disposition, answered.agent) == (
            "support", "answered", "ann")
        assert answered.wait_seconds is not None and 0.45 <= answered.wait_seconds < 3
        assert answered.answered_at is not None
        assert answered.ended_at - answered.started_at >= answered.wait_seconds
        assert not cdrs.active
    finally:
        await worker.stop()
        await queues.stop()
        await sim.stop()
