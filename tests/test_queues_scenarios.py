"""Through the engine simulators: a caller picks "support" in the menu, hears hold music and
their position, and is connected when an agent becomes available. Once on Asterisk (ARI
simulator, asyncio worker in this process) and once on FreeSWITCH (ESL simulator, the gevent
worker with the queue runtime under gevent, in a subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import flows
import pytest
import redis.asyncio as aioredis

from appserver.agents.bridge import BrowserAgentBridge
from appserver.agents.sip import supervisor_room
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import QueueStore
from appserver.settings import AriNode
from ivr.calls import CallFlow, CallInfo

ROOT = Path(__file__).resolve().parents[1]
Walk = Callable[[SimulatedCall, QueueStore], Awaitable[None]]


async def define_support(store: QueueStore) -> None:
    await store.sync_agent(AgentConfig("ann", kind="sip", extension="1001"))
    await store.sync_queue(QueueConfig("support", announce_interval=1, announce_wait=False,
                                       moh_class="default", wrapup_seconds=0), [Member("ann")])


async def queue_walk(call: SimulatedCall, store: QueueStore) -> None:
    """Menu -> support -> queue: hold music and position 1, then ann logs in and answers."""
    await call.wait_for_prompt("file:ivr/welcome")
    await call.press("2")
    await call.wait_for_prompt("file:ivr/support")
    await call.press("1")
    await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default")
    await call.wait_for_prompt("file:queue/position")
    await call.transcript.wait_for(lambda e: e.kind == "prompt_started"
                                   and e.detail == "number:1")
    await AgentControl(store).login("ann")  # a SIP agent is rung directly
    await call.transcript.wait_for(lambda e: e.kind == "bridged" and e.detail.endswith("1001"),
                                   timeout=10)
    await call.wait_ended(10)


async def connected_to_ann(call: SimulatedCall, control: AgentControl) -> int:
    """Menu -> support -> queue, ann logs in and is bridged: the transcript index after."""
    await call.wait_for_prompt("file:ivr/welcome")
    await call.press("2")
    await call.wait_for_prompt("file:ivr/support")
    await call.press("1")
    await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default")
    await control.login("ann")
    bridged = await call.transcript.wait_for(
        lambda e: e.kind == "bridged" and e.detail.endswith("1001"), timeout=10)
    return call.transcript.entries.index(bridged) + 1


async def agent_controls_walk(call: SimulatedCall, store: QueueStore) -> None:
    """Connected to ann, the caller is put on hold, resumed, then blind-transferred to 1002
    by ann (AgentControl, as the console does): the same transcript on both engines."""
    control = AgentControl(store)
    start = await connected_to_ann(call, control)

    async def seen(line: str) -> None:
        await call.transcript.wait_for(lambda e: f"{e.kind} {e.detail}".strip() == line,
                                       start=start)

    await control.hold("ann")
    await seen("moh default")
    await control.unhold("ann")
    await seen("held off")
    await control.transfer("ann", "extension:1002")
    await seen("transferred 1002")
    after = [line for line in call.transcript.lines()[start:] if not line.startswith("variable")]
    assert after[:4] == ["held on", "moh default", "moh", "held off"], after
    assert after[4].startswith("unbridged") and after[4].endswith("1001"), after
    assert after[5] == "transferred 1002", after
    await call.wait_ended(10)
    status = await control.status("ann")
    assert status is not None and status.state == "available" and status.call == ""
    assert (await store.stats("support")).answered == 1


async def supervisor_walk(call: SimulatedCall, store: QueueStore) -> None:
    """Connected to ann, a supervisor listens, whispers, barges and listens again on one leg
    (the store's supervise, as the API does), then leaves: who hears them, per the engine's
    mixing, is the same on both engines."""
    at = await connected_to_ann(call, AgentControl(store))
    room = supervisor_room(call.call_id)

    async def seen(line: str) -> int:
        entry = await call.transcript.wait_for(
            lambda e: f"{e.kind} {e.detail}".strip() == line, start=at)
        return call.transcript.entries.index(entry) + 1

    for op, mode, heard in (("start", "listen", "nobody"), ("change", "whisper", "agent"),
                            ("change", "barge", "caller,agent"),
                            ("change", "listen", "nobody")):
        assert await store.supervise(call.call_id, "sam", op, mode) == "ann"
        at = await seen(f"supervised {room} heard_by={heard}")
    await store.supervise(call.call_id, "sam", "stop")
    await seen(f"supervised {room} gone")
    supervised = [line for line in call.transcript.lines() if line.startswith("supervised")]
    assert supervised == [f"supervised {room} heard_by={heard}" for heard in (
        "nobody", "agent", "caller,agent", "nobody")] + [f"supervised {room} gone"]
    assert call.transcript.lines().count(f"dialed {room}") == 1  # one leg throughout
    await AgentControl(store).end_call("ann")
    await call.wait_ended(10)


async def agent_hangs_up_walk(call: SimulatedCall, store: QueueStore) -> None:
    """Connected to ann, who hangs up from the console (AgentControl.end_call): the worker
    ends her leg in the engine at once (her phone would talk 30 s more), whatever a LiveKit
    room would do; the caller's stay is over and the IVR closes the call."""
    control = AgentControl(store)
    start = await connected_to_ann(call, control)
    assert await control.end_call("ann") == "available"
    await call.transcript.wait_for(lambda e: e.kind == "unbridged" and e.detail.endswith("1001"),
                                   timeout=3, start=start)
    await call.wait_for_prompt("file:ivr/queue-closed")
    await call.wait_ended(10)
    assert (await store.stats("support")).answered == 1


@asynccontextmanager
async def asterisk_stack(redis_client: aioredis.Redis,
                         talk_seconds: float) -> AsyncIterator[tuple[AriSimulator, QueueRuntime]]:
    """ARI simulator (agent phone 1001 talks ``talk_seconds``), Asterisk worker, queues."""
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1),
                       endpoints=[SimEndpoint("PJSIP", "1001", talk_seconds=talk_seconds)],
                       unknown_endpoint=SimEndpoint("PJSIP", "any", talk_seconds=60))
    await sim.start()
    runtime: QueueRuntime | None = None

    def factory(info: CallInfo) -> CallFlow | None:
        flow = flows.factory(info)
        assert runtime is not None
        return BrowserAgentBridge(runtime.wrap(flow), LIVEKIT_SIP) if flow is not None \
            else None

    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], factory, redis=redis_client)
    runtime = QueueRuntime(redis_client, "asterisk-scenario", worker.deliver, tick_seconds=0.1)
    await runtime.start()
    await worker.start()
    try:
        await worker.wait_connected()
        yield sim, runtime
    finally:
        await worker.stop()
        await runtime.stop()
        await sim.stop()


async def test_asterisk_menu_to_queue_to_agent(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    async with asterisk_stack(redis_client, talk_seconds=0.3) as (sim, runtime):
        call = await sim.place_call("9999")
        await queue_walk(call, store)
        await runtime.drain()
        stats = await store.stats("support")
        assert (stats.answered, stats.waiting, stats.agent_calls) == (1, 0, {"ann": 1})


AGENT_WALKS = pytest.mark.parametrize(
    "walk", [agent_controls_walk, agent_hangs_up_walk, supervisor_walk],
    ids=["holds_and_transfers", "hangs_up_in_the_console", "supervisor_listens_and_barges"])
LIVEKIT_SIP = "sip:livekit.test:5060"  # the supervisor's room, answered by the simulators


@AGENT_WALKS
async def test_asterisk_agent_controls(redis_client: aioredis.Redis, walk: Walk) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    async with asterisk_stack(redis_client, talk_seconds=30) as (sim, _):
        await walk(await sim.place_call("9999"), store)


# ---------------------------------------------------------------- FreeSWITCH (gevent worker)

FS_WORKER = """
from gevent import monkey
monkey.patch_all()
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import redis
import flows
from appserver.freeswitch.worker import FreeswitchWorker
from appserver.queues.runtime import QueueRuntime
from appserver.shells.green import run
from appserver.agents.bridge import BrowserAgentBridge

def factory(info):
    flow = flows.factory(info)
    return BrowserAgentBridge(runtime.wrap(flow), {sip!r}) if flow is not None else None

worker = FreeswitchWorker(("127.0.0.1", {port}), factory)
runtime = QueueRuntime(redis.Redis.from_url({url!r}, decode_responses=True),
                       "freeswitch-scenario", worker.deliver, tick_seconds=0.1)
run(runtime.start())
worker.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fs_worker(port: int, redis_url: str,
                    code: str | None = None) -> subprocess.Popen[bytes]:
    """A gevent worker process running ``code`` (default: FS_WORKER), once it listens."""
    code = code or FS_WORKER.format(tests=str(ROOT / "tests"), root=str(ROOT), port=port,
                                    url=redis_url, sip=LIVEKIT_SIP)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "worker exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("worker did not start listening")


@asynccontextmanager
async def freeswitch_stack(redis_url: str,
                           talk_seconds: float) -> AsyncIterator[FreeswitchSimulator]:
    """ESL simulator (1001 answers and talks ``talk_seconds``) and a worker subprocess."""
    port = free_port()
    proc = start_fs_worker(port, redis_url)
    sim = FreeswitchSimulator([("127.0.0.1", port)],
                              Behaviour(prompt_seconds=0.1, talk_seconds=talk_seconds,
                                        endpoints={"1001": "answer"}))
    try:
        yield sim
    finally:
        await sim.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


async def test_freeswitch_menu_to_queue_to_agent(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    async with freeswitch_stack(redis_url, talk_seconds=0.3) as sim:
        call = await sim.place_call("9999")
        await queue_walk(call, store)
        await asyncio.sleep(0.3)
        stats = await store.stats("support")
        assert (stats.answered, stats.waiting, stats.agent_calls) == (1, 0, {"ann": 1})


@AGENT_WALKS
async def test_freeswitch_agent_controls(
    redis_client: aioredis.Redis, redis_url: str, walk: Walk
) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    async with freeswitch_stack(redis_url, talk_seconds=30) as sim:
        await walk(await sim.place_call("9999"), store)
