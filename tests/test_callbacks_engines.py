"""Callback in queue through the engine simulators, both engines: a waiting caller presses
the callback key, confirms their number and hangs up; an agent accepts the callback; the
worker calls the customer (FreeSWITCH ``bgapi originate``, Asterisk ``POST /channels``);
busy the first time, the retry after the queue's spacing is answered and the customer is
connected to the agent. And a worker restarted while a callback waits: another one (a new
process) dials it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis
import test_queues_scenarios as scenarios
from test_esl_simulator import _event as esl_event
from test_esl_simulator import _inbound as esl_inbound

from appserver.asterisk.callbacks import AsteriskCallbackDialer
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.channel import HOSTNAME
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.devkit.sim_routes import SimCalls
from appserver.freeswitch.esl_codec import parse_event
from appserver.queues.flow import callback_app
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import QueueStore
from appserver.settings import AriNode
from ivr.calls import Answer, CallFlow, CallInfo, Command, Enqueue, Event, Hangup, QueueResult

ROOT = Path(__file__).resolve().parents[1]
CUSTOMER = "5550100"


class ToSupport:
    """Every call straight into the queue "support"; hang up when the stay ends."""

    def __init__(self) -> None:
        self.done = False

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), Enqueue("support")]

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, QueueResult):
            self.done = True
            return [Hangup()]
        return []


def app(info: CallInfo) -> CallFlow:
    return callback_app(info) or ToSupport()


async def define_support(store: QueueStore, asterisk_endpoint: str = "PJSIP/{number}") -> None:
    await store.sync_agent(AgentConfig("ann"))  # in the browser: accepts the offer
    await store.sync_queue(QueueConfig(
        "support", announce_interval=0, wrapup_seconds=0, callback_key="5",
        callback_max_attempts=2, callback_retry_seconds=1, callback_ring_seconds=5,
        callback_freeswitch_endpoint="sofia/gateway/pstn/{number}",
        callback_asterisk_endpoint=asterisk_endpoint), [Member("ann")])


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def ask_for_callback(call: SimulatedCall) -> None:
    """The caller presses 5, hears their number, confirms with 1, hears goodbye."""
    await call.transcript.wait_for(lambda e: e.kind == "moh")
    await call.press("5")
    await call.wait_for_prompt("file:queue/callback_confirm")
    await call.wait_for_prompt("file:queue/callback_confirm_keys")
    await call.press("1")
    await call.wait_for_prompt("file:queue/callback_registered")
    await call.wait_ended(5)


async def accept_offer(store: QueueStore, agent: str = "ann") -> str:
    """Wait for ``agent``'s offer and accept it; the call id offered."""
    offer = ""

    async def offered() -> str:
        status = await store.agent(agent)
        return status.offer if status is not None else ""

    deadline = time.monotonic() + 10
    while not (offer := await offered()):
        assert time.monotonic() < deadline, "no offer"
        await asyncio.sleep(0.02)
    assert (await store.accept(agent, offer)).ok
    return offer


async def busy_then_answered(store: QueueStore, caller: SimulatedCall,
                             set_customer: Callable[[str], None],
                             customers: Callable[[], list[SimulatedCall | None]]) -> None:
    """The walk on either engine, from the caller's call to the connected callback;
    ``customers()``: the calls to the customer so far, once over (None: not answered)."""
    await ask_for_callback(caller)
    stats = await store.stats("support")
    assert (stats.waiting, stats.callbacks_waiting) == (0, 1)
    set_customer("busy")
    await store.agent_action("ann", "login")
    assert await accept_offer(store) == caller.call_id  # the callback, at the caller's place
    await until(lambda: len(customers()) == 1)
    assert customers() == [None]  # busy: not answered
    set_customer("answer")
    ann = await store.agent("ann")
    assert ann is not None and ann.no_answer == 0  # the customer's busy line is not ann's
    assert await accept_offer(store) == caller.call_id  # offered again after the spacing
    await until(lambda: len(customers()) == 2)
    customer = customers()[1]
    assert customer is not None
    await customer.wait_for_prompt("file:queue/callback_hello")
    await customer.transcript.wait_for(lambda e: e.kind == "bridged" and "ann" in e.detail)
    await customer.wait_ended(10)
    await until_answered(store)


async def until_answered(store: QueueStore) -> None:
    deadline = time.monotonic() + 5
    while True:
        stats = await store.stats("support")
        if stats.answered == 1:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.05)
    assert (stats.callbacks_requested, stats.callbacks_answered, stats.callbacks_failed,
            stats.callbacks_waiting, stats.callbacks_dialing) == (1, 1, 0, 0, 0)


# ---------------------------------------------------------------- Asterisk (in this process)


@asynccontextmanager
async def asterisk_stack(redis_client: aioredis.Redis, *sims: AriSimulator,
                         tick_seconds: float = 0.1,
                         grace_seconds: float = 30.0) -> AsyncIterator[QueueRuntime]:
    """A worker serving the nodes ``sims``, with its queue runtime dialling callbacks."""
    runtime: QueueRuntime | None = None

    def factory(info: CallInfo) -> CallFlow | None:
        assert runtime is not None
        return runtime.wrap(app(info))

    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password) for sim in sims],
                            factory, redis=redis_client)
    runtime = QueueRuntime(redis_client, f"asterisk-cb-{id(worker)}", worker.deliver,
                           tick_seconds=tick_seconds, lease_seconds=1,
                           dialer=AsteriskCallbackDialer(worker),
                           callback_grace_seconds=grace_seconds)
    await runtime.start()
    await worker.start()
    try:
        await worker.wait_connected()
        yield runtime
    finally:
        await worker.stop()
        await runtime.stop()


def ari_sim() -> AriSimulator:
    return AriSimulator(sounds=SoundCatalog(default_seconds=0.1), endpoints=[
        SimEndpoint("PJSIP", "ann", talk_seconds=0.5),
        SimEndpoint("PJSIP", CUSTOMER, behaviour="busy", talk_seconds=5)])


async def test_asterisk_callback_busy_then_answered(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    sim = ari_sim()
    await sim.start()
    try:
        async with asterisk_stack(redis_client, sim):
            caller = await sim.place_call("7000", caller=CUSTOMER)

            def set_customer(mode: str) -> None:
                sim.endpoints[f"PJSIP/{CUSTOMER}"].behaviour = mode  # type: ignore[assignment]

            def customers() -> list[SimulatedCall | None]:
                """Busy calls once hung up, answered ones once they hear something."""
                return [None if c.ended else c for _, c in sim.originated
                        if c is not None and (c.ended or c.prompts())]

            await busy_then_answered(store, caller, set_customer, customers)
    finally:
        await sim.stop()


# ---------------------------------------------------------------- FreeSWITCH (gevent worker)

FS_WORKER = """
from gevent import monkey
monkey.patch_all()
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import redis
from test_callbacks_engines import app
from appserver.freeswitch.callbacks import FreeswitchCallbackDialer
from appserver.freeswitch.inbound import NodeManager
from appserver.freeswitch.worker import FreeswitchWorker
from appserver.queues.runtime import QueueRuntime
from appserver.settings import EslNode
from appserver.shells.green import run

def factory(info):
    return runtime.wrap(app(info))

nodes = NodeManager([EslNode(host="127.0.0.1", port=port, password="ClueCon")
                     for port in {esl_ports!r}])
nodes.start()
worker = FreeswitchWorker(("127.0.0.1", {port}), factory)
runtime = QueueRuntime(redis.Redis.from_url({url!r}, decode_responses=True),
                       {worker_id!r}, worker.deliver, tick_seconds=0.1, lease_seconds=1,
                       dialer=FreeswitchCallbackDialer(nodes, "9999 XML callyard"))
run(runtime.start())
worker.serve_forever()
"""


def start_fs_worker(port: int, esl_port: int, redis_url: str, worker_id: str, *,
                    other_esl_ports: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """A worker on ``port`` with inbound ESL to the nodes ``esl_port`` and ``other_...``."""
    code = FS_WORKER.format(tests=str(ROOT / "tests"), root=str(ROOT), port=port,
                            esl_ports=[esl_port, *other_esl_ports], url=redis_url,
                            worker_id=worker_id)
    return scenarios.start_fs_worker(port, redis_url, code)


def stop_fs_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@asynccontextmanager
async def freeswitch_sim(port: int, hostname: str = HOSTNAME
                         ) -> AsyncIterator[FreeswitchSimulator]:
    """ESL simulator (host name ``hostname``) sending calls to the worker on ``port``: agent
    ann's leg talks 0.5 s, the customer is busy (tests change that)."""
    sim = FreeswitchSimulator([("127.0.0.1", port)], Behaviour(
        prompt_seconds=0.1, talk_seconds=0.5, endpoints={"ann": "answer", CUSTOMER: "busy"}),
        hostname=hostname)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def fs_customers(sim: FreeswitchSimulator) -> Callable[[], list[SimulatedCall | None]]:
    def customers() -> list[SimulatedCall | None]:
        return [call for number, call in sim.originated if number == CUSTOMER]
    return customers


async def test_freeswitch_callback_busy_then_answered(
        redis_client: aioredis.Redis, redis_url: str) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    port = scenarios.free_port()
    async with freeswitch_sim(port) as sim:
        proc = start_fs_worker(port, sim.esl_port, redis_url, "fs-cb-1")
        try:
            caller = await sim.place_call("7000", caller=CUSTOMER)

            def set_customer(mode: str) -> None:
                sim.behaviour.endpoints[CUSTOMER] = mode

            await busy_then_answered(store, caller, set_customer, fs_customers(sim))
        finally:
            stop_fs_worker(proc)


async def test_freeswitch_worker_restarted_while_a_callback_waits(
        redis_client: aioredis.Redis, redis_url: str) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    port = scenarios.free_port()
    async with freeswitch_sim(port) as sim:
        sim.behaviour.endpoints[CUSTOMER] = "answer"
        proc = start_fs_worker(port, sim.esl_port, redis_url, "fs-cb-a")
        try:
            await ask_for_callback(await sim.place_call("7000", caller=CUSTOMER))
        finally:
            stop_fs_worker(proc, signal.SIGKILL)  # the worker dies
        proc = start_fs_worker(port, sim.esl_port, redis_url, "fs-cb-b")  # its successor
        try:
            await after_restart(store, fs_customers(sim))
        finally:
            stop_fs_worker(proc)


async def test_asterisk_worker_restarted_while_a_callback_waits(
        redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await define_support(store)
    sim = ari_sim()
    sim.endpoints[f"PJSIP/{CUSTOMER}"].behaviour = "answer"
    await sim.start()
    try:
        async with asterisk_stack(redis_client, sim):
            await ask_for_callback(await sim.place_call("7000", caller=CUSTOMER))
        async with asterisk_stack(redis_client, sim):  # another worker, after the first
            await after_restart(store, lambda: [c for _, c in sim.originated])
    finally:
        await sim.stop()


async def after_restart(store: QueueStore,
                        customers: Callable[[], list[SimulatedCall | None]]) -> None:
    """The worker that registered the callback is gone; past its lease the callback still
    waits, the new worker dials it when ann accepts, and connects them."""
    await asyncio.sleep(1.5)  # more than a lease: a caller of the dead worker is reaped now
    assert (await store.stats("support")).callbacks_waiting == 1
    await store.agent_action("ann", "login")
    await accept_offer(store)
    await until(lambda: len(customers()) == 1)
    customer = customers()[0]
    assert customer is not None
    await customer.wait_for_prompt("file:queue/callback_hello")
    await customer.transcript.wait_for(lambda e: e.kind == "bridged" and "ann" in e.detail)
    await until_answered(store)


async def test_esl_simulator_originates_like_freeswitch() -> None:
    """``bgapi originate`` to a phone, as real FreeSWITCH 1.10.12 answered it
    (tests/real/test_callbacks_real.py): busy -> the leg's CHANNEL_CREATE then CHANNEL_HANGUP
    with Hangup-Cause USER_BUSY and the job's body ``-ERR USER_BUSY``; answered -> ``+OK
    <origination_uuid>`` and the leg runs the dialplan at the extension, variables set."""
    sim = FreeswitchSimulator([], Behaviour(prompt_seconds=5,  # the answered leg stays up
                                            endpoints={CUSTOMER: "busy", "5550111": "answer"}))
    await sim.start(esl_port=0)
    try:
        client = await esl_inbound(sim)
        assert (await client.reply("auth ClueCon")).reply_text == "+OK accepted"
        await client.reply("event plain BACKGROUND_JOB CHANNEL_CREATE CHANNEL_HANGUP")
        await client.send("bgapi originate {origination_uuid=leg-1,originate_timeout=5}"
                          f"sofia/gateway/pstn/{CUSTOMER} 9999 XML callyard")
        created = parse_event(await client.until(esl_event("CHANNEL_CREATE")))
        assert (created.headers["Unique-ID"], created.headers["Call-Direction"]) == (
            "leg-1", "outbound")
        hangup = parse_event(await client.until(esl_event("CHANNEL_HANGUP")))
        assert hangup.headers["Hangup-Cause"] == "USER_BUSY"
        job = parse_event(await client.until(esl_event("BACKGROUND_JOB")))
        assert job.body == "-ERR USER_BUSY\n"
        await client.send("bgapi originate {origination_uuid=leg-2,callyard_callback=s:c1}"
                          "sofia/gateway/pstn/5550111 9999 XML callyard")
        job = parse_event(await client.until(esl_event("BACKGROUND_JOB")))
        assert job.body == "+OK leg-2\n"
        number, call = sim.originated[-1]
        assert number == "5550111" and call is not None
        assert call.channel.variables["callyard_callback"] == "s:c1"
        assert (call.channel.called, call.channel.context) == ("9999", "callyard")
        # The dev softphone picks the answered callback up, once.
        calls = SimCalls({"freeswitch": sim})
        assert calls.incoming() == ["leg-2"] and calls.incoming() == []
        assert calls.state("leg-2").to == "5550111"
    finally:
        await sim.stop()
