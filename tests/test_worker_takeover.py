"""A queued caller whose worker dies keeps their place, on both engines, with worker
processes against the simulators (real Redis and PostgreSQL).

What mod_callcenter / app_queue users expect: the caller queued second, behind another,
goes on hearing hold music and "you are caller 2" from the worker the engine gives the call
to next (FreeSWITCH: the dialplan's next ``socket``; Asterisk: the restarted worker of the
same Stasis application re-adopting the channel), never the menu from the top; the offer
ringing an agent for the first caller stays, and the agent who accepts is connected by that
worker; each call leaves one CDR, which says which worker
it was taken over from, and no queue entry is left.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
from test_cdr_asterisk import drain_cdrs
from test_faults import callyard, stop, until
from test_queue_outages import QUEUE, TALK, _keys, _listening, _offered, eventually, queued

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint
from appserver.devkit.sim.caller import EngineSimulator, Entry, SimulatedCall
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore

Process = asyncio.subprocess.Process


async def alice_queue(client: aioredis.Redis) -> QueueStore:
    """QUEUE with agent alice (logged out), position announced every second."""
    store = QueueStore(client)
    await store.sync_agent(AgentConfig("alice"))
    await store.sync_queue(QueueConfig(QUEUE, ring_timeout=120, wrapup_seconds=0,
                                       announce_interval=1, announce_position=True),
                           [Member("alice")])
    return store


def since(call: SimulatedCall, moment: float) -> Callable[[Entry], bool]:
    """Entries of ``call`` after ``moment`` (time.monotonic())."""
    offset = moment - call.transcript.started
    return lambda e: e.at >= offset


def announced(call: SimulatedCall, moment: float, position: int) -> Callable[[Entry], bool]:
    after = since(call, moment)
    return lambda e: after(e) and e.kind == "prompt_started" and f"number:{position}" in e.detail


def hears_moh(call: SimulatedCall, moment: float) -> Callable[[Entry], bool]:
    after = since(call, moment)
    return lambda e: after(e) and e.kind == "moh" and e.detail == "default"


async def both_answered_by_alice(store: QueueStore, first: SimulatedCall,
                                 second: SimulatedCall) -> None:
    """alice takes the first caller (offered to her before the worker died), then the
    second; both are bridged."""
    control = AgentControl(store)
    for call in (first, second):
        await eventually(f"alice offered {call.call_id}", lambda: store.agent("alice"),
                         _offered(call.call_id), timeout=20)
        assert (await control.accept("alice", call.call_id)).ok
        await call.transcript.wait_for(lambda e: e.kind == "bridged", 10)
        await call.wait_ended(15)


async def check_the_records(client: aioredis.Redis, pg_pool: asyncpg.Pool,
                            calls: list[SimulatedCall], dead_worker: str) -> None:
    """One CDR per call, answered by alice, taken over from the dead worker; no queue entry
    and no conflicting second record."""
    assert await drain_cdrs(client, pg_pool, len(calls), timeout=20) == len(calls)
    rows = {r["call_id"]: r for r in await pg_pool.fetch("SELECT * FROM cdrs")}
    assert sorted(rows) == sorted(c.call_id for c in calls)
    for call in calls:
        row = rows[call.call_id]
        extra = row["extra"] if isinstance(row["extra"], dict) else json.loads(row["extra"])
        assert (row["disposition"], row["queue"], row["agent"]) == ("answered", QUEUE, "alice")
        assert extra.get("taken_over_from") == dead_worker, extra
        assert row["wait_seconds"] is not None and row["wait_seconds"] > 1.0
        # started and answered when it joined the queue, the earliest the record knows
        assert row["started_at"] == row["answered_at"] < row["ended_at"]
    assert await client.xlen("callyard:cdrs:dead") == 0
    await eventually("no queue entry left", lambda: _keys(client, "{callyard:q}:call:*"),
                     lambda keys: keys == [])
    stats = await QueueStore(client).stats(QUEUE)
    assert (stats.joined, stats.answered, stats.lost) == (2, 2, 0)


async def queued_first_and_second(sim: EngineSimulator, store: QueueStore
                                  ) -> tuple[SimulatedCall, SimulatedCall]:
    """Two callers queued, the second hears "you are caller 2"; alice logs in and is
    offered the first (her console rings until she accepts)."""
    first = await queued(sim, "+15550001")
    second = await queued(sim, "+15550002")
    await second.transcript.wait_for(announced(second, 0.0, 2), 10)
    await AgentControl(store).login("alice")
    await eventually("alice offered the first caller", lambda: store.agent("alice"),
                     _offered(first.call_id))
    return first, second


async def after_the_death(calls: list[SimulatedCall], died: float) -> None:
    """Each caller hears hold music again and their place announced, and no menu."""
    for position, call in enumerate(calls, 1):
        await call.transcript.wait_for(hears_moh(call, died), 20)
        await call.transcript.wait_for(announced(call, died, position), 10)
    for call in calls:
        after = since(call, died)
        menus = [e.detail for e in call.transcript.entries
                 if after(e) and e.kind == "prompt_started" and "ivr/" in e.detail]
        assert menus == [], call.transcript.lines()


async def dead_owner(store: QueueStore, call: SimulatedCall) -> str:
    entry = await store.client.hget(store.keys.call(call.call_id), "owner")
    assert entry, f"{call.call_id} has no queue entry"
    return str(entry)


# ---------------------------------------------------------------- FreeSWITCH


async def freeswitch_worker(listen: int, sim: FreeswitchSimulator, redis_url: str) -> Process:
    proc = await callyard("freeswitch", "--flow-factory", "flows:factory",
                          CALLYARD_REDIS_URL=redis_url,
                          CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{listen}",
                          CALLYARD_FREESWITCH_ESL=f"127.0.0.1:{sim.esl_port}:{sim.password}")
    await until(lambda: _listening(listen), 20, "the FreeSWITCH worker listening")
    return proc


async def test_freeswitch_queued_caller_keeps_their_place_when_their_worker_dies(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """Two worker processes on one node; both callers wait on the first, the second behind
    the first. The first is SIGKILLed: FreeSWITCH's dialplan goes on to the second worker's
    socket, which takes both callers over at their places."""
    store = await alice_queue(redis_client)
    ports = [free_port(), free_port()]
    sim = FreeswitchSimulator([("127.0.0.1", p) for p in ports],
                              Behaviour(prompt_seconds=0.1, talk_seconds=TALK))
    await sim.start()
    workers = [await freeswitch_worker(port, sim, redis_url) for port in ports]
    try:
        first, second = await queued_first_and_second(sim, store)
        owner = await dead_owner(store, second)
        died = time.monotonic()
        workers[0].send_signal(signal.SIGKILL)
        await workers[0].wait()
        await after_the_death([first, second], died)
        await both_answered_by_alice(store, first, second)
        await check_the_records(redis_client, pg_pool, [first, second], owner)
    finally:
        errors = [await stop(w) for w in workers]
        await sim.stop()
    assert workers[1].returncode == 0, errors[1][-3000:]


# ---------------------------------------------------------------- Asterisk


@asynccontextmanager
async def ari_simulator() -> AsyncIterator[AriSimulator]:
    sim = AriSimulator(unknown_endpoint=SimEndpoint("PJSIP", "any", talk_seconds=TALK))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def asterisk_worker(sim: AriSimulator, redis_url: str) -> Process:
    proc = await callyard("asterisk", "--flow-factory", "flows:factory",
                          CALLYARD_REDIS_URL=redis_url,
                          CALLYARD_ASTERISK_ARI=sim.url_with_credentials)
    await sim.wait_app_connected("callyard", 20)
    return proc


async def test_asterisk_queued_caller_keeps_their_place_when_their_worker_restarts(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """The worker of application ``callyard`` is SIGKILLed with two callers waiting (they
    stay in Stasis); the worker restarted for that application re-adopts them, takes them
    over and they go on waiting at their places."""
    store = await alice_queue(redis_client)
    async with ari_simulator() as sim:
        dead = await asterisk_worker(sim, redis_url)
        workers = [dead]
        try:
            first, second = await queued_first_and_second(sim, store)
            owner = await dead_owner(store, second)
            died = time.monotonic()
            dead.send_signal(signal.SIGKILL)
            await dead.wait()
            workers.append(await asterisk_worker(sim, redis_url))
            await after_the_death([first, second], died)
            await both_answered_by_alice(store, first, second)
            await check_the_records(redis_client, pg_pool, [first, second], owner)
        finally:
            errors = [await stop(w) for w in workers]
    assert workers[-1].returncode == 0, errors[-1][-3000:]
