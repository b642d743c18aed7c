"""Callback in queue through the engine simulators, both engines: a waiting caller presses
the callback key, confirms their number and hangs up; an agent accepts the callback; the
worker calls the customer (FreeSWITCH ``bgapi originate``, Asterisk ``POST /channels``);
busy the first time, the retry after the queue's spacing is answered and the customer is
connected to the agent. And a worker restarted while a callback waits: another one (a new
process) dials it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from appserver.asterisk.callbacks import AsteriskCallbackDialer
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
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
async def asterisk_stack(redis_client: aioredis.Redis,
                         sim: AriSimulator) -> AsyncIterator[QueueRuntime]:
    runtime: QueueRuntime | None = None

    def factory(info: CallInfo) -> CallFlow | None:
        assert runtime is not None
        return runtime.wrap(app(info))

    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], factory, redis=redis_client)
    runtime = QueueRuntime(redis_client, f"asterisk-cb-{id(worker)}", worker.deliver,
                           tick_seconds=0.1, dialer=AsteriskCallbackDialer(worker))
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
                return [None if c.ended else c for c in sim.originated
                        if c.ended or c.prompts()]

            await busy_then_answered(store, caller, set_customer, customers)
    finally:
        await sim.stop()
