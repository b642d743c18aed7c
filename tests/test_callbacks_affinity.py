"""Callbacks are dialled from the engine node their caller came in on (README "Callback in
queue"): in real Redis, a worker claims a callback of a node it reaches; a worker of the same
engine on another node only once no worker has reached the caller's node for the grace; a
worker of another engine never. Then the same through the queue runtime (two workers sharing
the Redis, the wrong one ticking first)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
import test_queues_scenarios as scenarios
from test_callbacks_engines import (
    CUSTOMER,
    accept_offer,
    ari_sim,
    ask_for_callback,
    asterisk_stack,
    define_support,
    freeswitch_sim,
    fs_customers,
    start_fs_worker,
    stop_fs_worker,
    until,
)
from test_callbacks_store import CB, Dialer
from test_queues_store import T0, setup

from appserver.devkit.sim.ari import AriSimulator
from appserver.devkit.sim.caller import SimulatedCall
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import QueueStore
from appserver.settings import SettingsError, load_settings
from appserver.shells import aio, close
from appserver.worker.services import WorkerServices

GRACE = 30_000


async def accepted(store: QueueStore, now: int, engine: str = "asterisk",
                   node: str = "pbx1:8088") -> None:
    """c1, who came in on ``engine`` ``node``, asks for a callback; ann accepts it."""
    await store.enqueue("support", "c1", "w1", now=now, caller="5550100")
    await store.request_callback("c1", "5550100", now=now + 10, engine=engine, node=node)
    await store.match("support", now=now + 20)
    assert (await store.accept("ann", "c1", now=now + 30)).ok


async def claim(store: QueueStore, worker: str, engine: str, nodes: list[str],
                now: int) -> list[str]:
    dials = await store.claim_callbacks(worker, 60_000, now=now, engine=engine, nodes=nodes,
                                        grace_ms=GRACE)
    return [f"{d.entry}@{d.node}" for d in dials]


async def test_only_the_callers_node_claims_while_a_worker_reaches_it(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await claim(store, "w-pbx1", "asterisk", ["pbx1:8088"], t)  # pbx1 reached, no callback yet
    await accepted(store, t + 100)
    assert await claim(store, "w-pbx2", "asterisk", ["pbx2:8088"], t + 200) == []
    assert await claim(store, "w-fs", "freeswitch", ["pbx1:8088"], t + 300) == []
    assert await claim(store, "w-pbx1", "asterisk", ["pbx2:8088", "pbx1:8088"], t + 400) == [
        "c1@pbx1:8088"]
    history = await redis_client.xrange("{callyard:q}:callbacks:history")
    assert history[-1][1]["worker"] == "w-pbx1"


async def test_another_node_of_the_engine_dials_once_the_callers_node_is_gone_for_the_grace(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await claim(store, "w-pbx1", "asterisk", ["pbx1:8088"], t)  # pbx1's worker, last seen
    await accepted(store, t + 100)
    for late in (1_000, GRACE - 1):  # pbx1 may come back: its worker died or lost the link
        assert await claim(store, "w-pbx2", "asterisk", ["pbx2:8088"], t + late) == []
    assert await claim(store, "w-pbx2", "asterisk", ["pbx2:8088"], t + GRACE) == [
        "c1@pbx1:8088"]


async def test_a_node_no_worker_ever_reached_is_dialled_by_any_node_of_its_engine(
        redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await accepted(store, t, node="pbx9:8088")  # e.g. its workers have no ARI/ESL link to it
    assert await claim(store, "w-pbx2", "asterisk", ["pbx2:8088"], t + 100) == [
        "c1@pbx9:8088"]


async def test_a_worker_of_another_engine_never_dials(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await accepted(store, t, engine="freeswitch", node="fs1")
    for later in (100, 10 * GRACE):
        assert await claim(store, "w-ast", "asterisk", ["fs1"], t + later) == []
    assert await claim(store, "w-fs", "freeswitch", ["fs2"], t + 10 * GRACE) == ["c1@fs1"]


async def test_a_callback_with_no_node_goes_to_any_worker(redis_client: aioredis.Redis) -> None:
    """Requested before callbacks kept their node (an upgrade with callbacks waiting)."""
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    await accepted(store, t, engine="", node="")
    assert await claim(store, "w-fs", "freeswitch", ["fs1"], t + 100) == ["c1@"]


async def test_callbacks_of_other_engines_do_not_crowd_out_a_workers_own(
        redis_client: aioredis.Redis) -> None:
    """More callbacks waiting for other engines than a claim takes at once: a worker still
    finds those of its own nodes behind them."""
    store = await setup(redis_client, ["ann", "bob", "cy"], **CB)  # type: ignore[arg-type]
    t = T0 + 10_000
    for i, (engine, node) in enumerate([("freeswitch", "fs1"), ("freeswitch", "fs1"),
                                        ("asterisk", "pbx1:8088")]):
        await store.enqueue("support", f"c{i}", "w1", now=t + i, caller="5550100")
        await store.request_callback(f"c{i}", "5550100", now=t + 10 + i, engine=engine,
                                     node=node)
    for offer in await store.match("support", now=t + 100):
        assert (await store.accept(offer.agent, offer.call_id, now=t + 200)).ok
    dials = await store.claim_callbacks("w-ast", 60_000, now=t + 300, limit=1,
                                        engine="asterisk", nodes=["pbx1:8088"])
    assert [d.entry for d in dials] == ["c2"]


async def test_two_workers_of_different_engines_only_the_callers_dials(
        redis_client: aioredis.Redis) -> None:
    """Two runtimes sharing the Redis, FreeSWITCH and Asterisk: the caller came in on the
    Asterisk node; the FreeSWITCH worker ticks first and leaves the callback alone."""
    store = await setup(redis_client, ["ann"], **CB)  # type: ignore[arg-type]
    await accepted(store, T0, engine="asterisk", node="pbx1:8088")
    fs, ast = Dialer(["fs1"], engine="freeswitch"), Dialer(["pbx1:8088"], engine="asterisk")
    for name, dialer in (("w-fs", fs), ("w-ast", ast)):
        runtime = QueueRuntime(redis_client, name, dialer=dialer, callback_grace_seconds=0)
        await runtime.refresh_configs()
        await runtime.tick()
        await asyncio.sleep(0.05)  # the dial runs beside the tick
    assert fs.dials == []
    assert [(d.entry, d.node) for d in ast.dials] == [("c1", "pbx1:8088")]


# ---------------------------------------------------------------- workers on the simulators


async def ann_free(store: QueueStore) -> None:
    """ann's call with the last customer is over: she can take the next offer."""
    deadline = time.monotonic() + 15
    while True:
        ann = await store.agent("ann")
        if ann is not None and ann.state == "available" and not ann.call:
            return
        assert time.monotonic() < deadline, ann
        await asyncio.sleep(0.05)


async def called_back(store: QueueStore, customers: Callable[[], list[SimulatedCall | None]],
                      count: int) -> None:
    """ann accepts the callback; the ``count``-th call to the customer (on the simulator of
    ``customers``) answers and is connected to her."""
    await accept_offer(store)
    await until(lambda: len(customers()) == count)
    customer = customers()[-1]
    assert customer is not None
    await customer.transcript.wait_for(lambda e: e.kind == "bridged" and "ann" in e.detail)


async def origin(redis_client: aioredis.Redis, entry: str) -> list[str | None]:
    return await redis_client.hmget(f"{{callyard:q}}:call:{entry}", "cb_engine", "cb_node")


async def test_freeswitch_and_asterisk_workers_each_dial_their_own_callers(
        redis_client: aioredis.Redis, redis_url: str) -> None:
    """A FreeSWITCH and an Asterisk worker (each on its simulator) share the Redis. A caller
    of the Asterisk node asks for a callback: the Asterisk worker dials it, though the
    FreeSWITCH worker ticks five times as often; then one of the FreeSWITCH node: the
    FreeSWITCH worker dials it (its node named by its host name on both sides)."""
    store = QueueStore(redis_client)
    await define_support(store)
    ast_sim = ari_sim()
    ast_sim.endpoints[f"PJSIP/{CUSTOMER}"].behaviour = "answer"
    await ast_sim.start()
    port = scenarios.free_port()
    try:
        async with freeswitch_sim(port) as fs_sim, \
                asterisk_stack(redis_client, ast_sim, tick_seconds=0.5):
            fs_sim.behaviour.endpoints[CUSTOMER] = "answer"
            proc = start_fs_worker(port, fs_sim.esl_port, redis_url, "fs-affinity")
            try:
                caller = await ast_sim.place_call("7000", caller=CUSTOMER)
                await ask_for_callback(caller)
                assert await origin(redis_client, caller.call_id) == [
                    "asterisk", f"127.0.0.1:{ast_sim.port}"]
                await store.agent_action("ann", "login")
                await called_back(store, lambda: [c for _, c in ast_sim.originated], 1)
                assert fs_sim.originated == []
                await ann_free(store)

                caller = await fs_sim.place_call("7000", caller=CUSTOMER)
                await ask_for_callback(caller)
                assert await origin(redis_client, caller.call_id) == [
                    "freeswitch", "callyard-sim"]
                await called_back(store, fs_customers(fs_sim), 1)
                assert len(ast_sim.originated) == 1
                assert await redis_client.zscore("{callyard:q}:callbacks:nodes",
                                                 "freeswitch/callyard-sim") is not None
            finally:
                stop_fs_worker(proc)
    finally:
        await ast_sim.stop()


@asynccontextmanager
async def two_asterisk_nodes() -> AsyncIterator[tuple[AriSimulator, AriSimulator]]:
    """Two ARI simulators (nodes A and B, by their addresses) whose customer answers."""
    sims = (ari_sim(), ari_sim())
    try:
        for sim in sims:
            sim.endpoints[f"PJSIP/{CUSTOMER}"].behaviour = "answer"
            await sim.start()
        yield sims
    finally:
        for sim in sims:
            await sim.stop()


async def test_the_callers_node_dials_and_another_only_once_it_is_gone_for_the_grace(
        redis_client: aioredis.Redis) -> None:
    """Two Asterisk nodes, a worker each. A caller of node A asks for a callback: A's worker
    dials it, though B's ticks three times as often. A second caller of A asks, then A's
    worker goes away: B's worker dials that callback, but only once the grace (2 s) has
    passed since A's worker last reached A."""
    store = QueueStore(redis_client)
    await define_support(store)
    grace = 2.0
    async with two_asterisk_nodes() as (sim_a, sim_b), \
            asterisk_stack(redis_client, sim_b, grace_seconds=grace):
        async with asterisk_stack(redis_client, sim_a, tick_seconds=0.3,
                                  grace_seconds=grace):
            await ask_for_callback(await sim_a.place_call("7000", caller=CUSTOMER))
            await store.agent_action("ann", "login")
            await called_back(store, lambda: [c for _, c in sim_a.originated], 1)
            assert sim_b.originated == []
            await ann_free(store)
            await ask_for_callback(await sim_a.place_call("7000", caller=CUSTOMER))
        # A's worker stopped: nobody reaches node A any more.
        await accept_offer(store)
        await until(lambda: len(sim_b.originated) == 1, timeout=grace + 5)
        assert len(sim_a.originated) == 1
        last_seen = await redis_client.zscore("{callyard:q}:callbacks:nodes",
                                              f"asterisk/127.0.0.1:{sim_a.port}")
        history = await redis_client.xrange("{callyard:q}:callbacks:history")
        dialled_at = [int(f["at"]) for _, f in history if f["event"] == "dialing"][-1]
        assert last_seen is not None and dialled_at - last_seen >= grace * 1000
        customer = sim_b.originated[0][1]
        assert customer is not None
        await customer.transcript.wait_for(
            lambda e: e.kind == "bridged" and "ann" in e.detail)


async def test_a_worker_on_two_nodes_dials_from_the_callers(
        redis_client: aioredis.Redis) -> None:
    """One Asterisk worker linked to nodes A and B; a caller of B asks for a callback: the
    worker calls the customer through B, not through the first node it has."""
    store = QueueStore(redis_client)
    await define_support(store)
    async with two_asterisk_nodes() as (sim_a, sim_b), \
            asterisk_stack(redis_client, sim_a, sim_b):
        await ask_for_callback(await sim_b.place_call("7000", caller=CUSTOMER))
        await store.agent_action("ann", "login")
        await called_back(store, lambda: [c for _, c in sim_b.originated], 1)
        assert sim_a.originated == []


async def test_a_freeswitch_worker_on_two_nodes_dials_from_the_callers(
        redis_client: aioredis.Redis, redis_url: str) -> None:
    """One FreeSWITCH worker with inbound ESL to nodes fs-a and fs-b (both send it their
    calls); a caller of fs-b asks for a callback: the worker originates it on fs-b, the
    node whose host name (``api hostname``) is the call's ``FreeSWITCH-Hostname``."""
    store = QueueStore(redis_client)
    await define_support(store)
    port = scenarios.free_port()
    async with freeswitch_sim(port, "fs-a") as sim_a, freeswitch_sim(port, "fs-b") as sim_b:
        for sim in (sim_a, sim_b):
            sim.behaviour.endpoints[CUSTOMER] = "answer"
        proc = start_fs_worker(port, sim_a.esl_port, redis_url, "fs-two-nodes",
                               other_esl_ports=[sim_b.esl_port])
        try:
            caller = await sim_b.place_call("7000", caller=CUSTOMER)
            await ask_for_callback(caller)
            assert await origin(redis_client, caller.call_id) == ["freeswitch", "fs-b"]
            await store.agent_action("ann", "login")
            await called_back(store, fs_customers(sim_b), 1)
            assert sim_a.originated == []
        finally:
            stop_fs_worker(proc)


async def test_the_grace_is_a_worker_setting(monkeypatch: pytest.MonkeyPatch,
                                             redis_url: str) -> None:
    """``CALLYARD_CALLBACK_AFFINITY_GRACE`` reaches the worker's queue runtime; a negative
    one is refused, naming the variable."""
    monkeypatch.setenv("CALLYARD_CALLBACK_AFFINITY_GRACE", "7.5")
    services = WorkerServices(load_settings(), redis_url, aio, engine="asterisk", apps=[])
    try:
        assert services.queues.callback_grace_ms == 7500
    finally:
        await close(services.redis)
    monkeypatch.setenv("CALLYARD_CALLBACK_AFFINITY_GRACE", "-1")
    with pytest.raises(SettingsError, match="CALLYARD_CALLBACK_AFFINITY_GRACE"):
        load_settings()
