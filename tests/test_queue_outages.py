"""Redis outages with queued callers, on both workers as real processes.

Reproduces the "ghost callers" finding against ``callyard dev``: callers who hung up while
Redis was stopped (SIGSTOP 10 s) or restarting stayed ``waiting`` in the queue (the Leave
failed, was only logged, and the worker's heartbeat kept renewing their leases). Agents were
then offered ghosts: alice went ``on_call`` into an empty room, bob was re-offered the same
ghost six times and the real caller behind it never was.

What mod_callcenter / app_queue users expect, and what these tests check after the outage: a
queue entry exists only while its caller is really there (the hung-up callers' records are
gone from Redis; a caller who joined during the outage is queued once Redis is back); an
offer whose caller left is withdrawn and the agent is available again, with no wrap-up and
no missed-offer count; agents are offered and connected to the live callers only; every
caller is counted once and every CDR is stored once.

FreeSWITCH: the gevent worker against the ESL simulator; Asterisk: the asyncio
worker against the ARI simulator. Redis is a server of the test's own (AOF, like
production), stalled with SIGSTOP/SIGCONT or restarted.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import redis.asyncio as aioredis
from test_cdr_asterisk import drain_cdrs
from test_faults import _ping, _redis_server, callyard, stop, until

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint
from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import AgentConfig, AgentStatus, Member, QueueConfig
from appserver.queues.store import QueueStore
from appserver.shells import reply

QUEUE = "general"  # tests/flows.py: "9" in the main menu
STALL = 7.0  # longer than redis-py's 5 s socket timeout: what is sent meanwhile times out
TALK = 0.3  # seconds an agent's leg talks before hanging up
T = TypeVar("T")


class RedisServer:
    """A Redis server of the test's own, with the two faults."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = _redis_server(directory, self.port)

    async def begin(self, fault: str) -> None:
        if fault == "stall":
            self.proc.send_signal(signal.SIGSTOP)
        else:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    async def end(self, fault: str, client: aioredis.Redis) -> None:
        if fault == "stall":
            self.proc.send_signal(signal.SIGCONT)
        else:
            self.proc = _redis_server(self.directory, self.port)  # AOF: the state comes back
        await until(lambda: _ping(client), 10, "Redis back")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@asynccontextmanager
async def asterisk_worker(redis_url: str) -> AsyncIterator[EngineSimulator]:
    sim = AriSimulator(unknown_endpoint=SimEndpoint("PJSIP", "any", talk_seconds=TALK))
    await sim.start()
    proc = await callyard("asterisk", "--flow-factory", "flows:factory",
                          CALLYARD_REDIS_URL=redis_url,
                          CALLYARD_ASTERISK_ARI=sim.url_with_credentials)
    try:
        await sim.wait_app_connected("callyard", 20)
        yield sim
    finally:
        err = await stop(proc)
        await sim.stop()
    assert proc.returncode == 0, err[-3000:]


@asynccontextmanager
async def freeswitch_worker(redis_url: str) -> AsyncIterator[EngineSimulator]:
    listen = free_port()
    sim = FreeswitchSimulator([("127.0.0.1", listen)],
                              Behaviour(prompt_seconds=0.1, talk_seconds=TALK))
    await sim.start()
    proc = await callyard("freeswitch", "--flow-factory", "flows:factory",
                          CALLYARD_REDIS_URL=redis_url,
                          CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{listen}",
                          CALLYARD_FREESWITCH_ESL=f"127.0.0.1:{sim.esl_port}:{sim.password}")
    try:
        await until(lambda: _listening(listen), 20, "the FreeSWITCH worker listening")
        yield sim
    finally:
        err = await stop(proc)
        await sim.stop()
    assert proc.returncode == 0, err[-3000:]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


WORKERS = {"asterisk": asterisk_worker, "freeswitch": freeswitch_worker}


async def queued(sim: EngineSimulator, caller: str) -> SimulatedCall:
    """A caller picks the queue in the menu and hears its hold music."""
    call = await sim.place_call("9999", caller=caller)
    await call.wait_for_prompt("file:ivr/welcome", 10)
    await call.press("9")
    await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default", 10)
    return call


async def alice_and_bob_queue(client: aioredis.Redis) -> QueueStore:
    """The store on ``client``, with agents alice and bob in QUEUE (an offer rings until
    answered, no wrap-up)."""
    store = QueueStore(client)
    for agent in ("alice", "bob"):
        await store.sync_agent(AgentConfig(agent))
    await store.sync_queue(QueueConfig(QUEUE, ring_timeout=120, wrapup_seconds=0),
                           [Member("alice"), Member("bob")])
    return store


def waiting_callers(store: QueueStore) -> Callable[[], Awaitable[set[str]]]:
    """The call ids waiting (or offered) in QUEUE."""
    async def waiting() -> set[str]:
        key = store.keys.waiting(QUEUE)
        return {str(c) for c in await reply(store.client.zrange(key, 0, -1))}
    return waiting


async def eventually(what: str, get: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     timeout: float = 15) -> T:
    """``get()`` once ``check`` holds; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    while not check(value := await get()):
        assert time.monotonic() < deadline, f"{what}: timed out; last value {value!r}"
        await asyncio.sleep(0.1)
    return value


@pytest.mark.parametrize("fault", ["stall", "restart"])
@pytest.mark.parametrize("engine", ["asterisk", "freeswitch"])
async def test_callers_hanging_up_during_a_redis_outage_leave_no_ghost(
    engine: str, fault: str, scratch_dir: Path, pg_pool: asyncpg.Pool,
) -> None:
    """Four callers wait, alice is offered the first; Redis stalls (SIGSTOP, 7 s) or
    restarts; meanwhile the offered caller and the next one hang up and a fifth caller joins.
    Afterwards the queue holds exactly the three live callers, alice's offer was withdrawn
    (available, not counted as missed), alice and bob are offered and connected to live
    callers only, and every call leaves one CDR and no record in Redis."""
    redis = RedisServer(scratch_dir / "redis")
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        await until(lambda: _ping(client), 10, "Redis up")
        store = await alice_and_bob_queue(client)
        control = AgentControl(store)
        waiting = waiting_callers(store)
        async with WORKERS[engine](redis.url) as sim:
            callers = [await queued(sim, f"+1555000{i}") for i in range(4)]
            ids = [c.call_id for c in callers]

            await eventually("four callers waiting", waiting, lambda w: w == set(ids))
            await control.login("alice")
            alice = await store.agent("alice")
            assert alice is not None and alice.offer == ids[0]

            outage_started = time.monotonic()
            await redis.begin(fault)
            for gone in callers[:2]:  # the offered caller and the next one hang up
                await gone.hangup()
            late = await queued(sim, "+15550009")  # and a caller joins meanwhile
            for gone in callers[:2]:
                await gone.wait_ended(10)
            if fault == "stall":
                await asyncio.sleep(max(0.0, STALL - (time.monotonic() - outage_started)))
            await redis.end(fault, client)

            live = [*callers[2:], late]
            await eventually("exactly the live callers waiting", waiting,
                             lambda w: w == {c.call_id for c in live})
            for gone in ids[:2]:
                assert not await client.exists(f"{store.prefix}call:{gone}"), gone
            # alice's offer was withdrawn: no wrap-up, not a missed offer; she is offered the
            # next live caller.
            alice = await eventually("alice offered the next live caller",
                                     lambda: store.agent("alice"), _offered(ids[2]))
            assert alice is not None and alice.no_answer == 0
            await control.login("bob")
            await eventually("bob offered the live caller after",
                             lambda: store.agent("bob"), _offered(ids[3]))
            for agent, call in (("alice", callers[2]), ("bob", callers[3])):
                assert (await control.accept(agent, call.call_id)).ok
                await call.transcript.wait_for(lambda e: e.kind == "bridged", 10)
            # whoever is free first takes the caller who joined during the outage
            taker = await eventually("the late caller offered", lambda: _offered_to(store, late),
                                     lambda agent: agent is not None)
            assert taker is not None and (await control.accept(taker, late.call_id)).ok
            await late.transcript.wait_for(lambda e: e.kind == "bridged", 10)
            for call in live:
                await call.wait_ended(15)

            stats = await store.stats(QUEUE)
            assert (stats.joined, stats.answered, stats.abandoned, stats.waiting) == (5, 3, 2, 0)
            for agent in ("alice", "bob"):
                status = await store.agent(agent)
                assert status is not None
                assert (status.state, status.offer, status.call) == ("available", "", ""), status
            for pattern in ("{callyard:q}:call:*", "callyard:asterisk:call:*"):
                await eventually(f"no {pattern} left in Redis",
                                 lambda p=pattern: _keys(client, p),  # type: ignore[misc]
                                 lambda keys: keys == [])
            everyone = {*ids, late.call_id}
            assert await drain_cdrs(client, pg_pool, len(everyone), timeout=20) == len(everyone)
            rows = await pg_pool.fetch("SELECT call_id FROM cdrs")
            assert sorted(r["call_id"] for r in rows) == sorted(everyone)
    finally:
        await client.aclose()
        redis.close()


def _offered(call: str) -> Callable[[AgentStatus | None], bool]:
    return lambda s: s is not None and (s.state, s.offer) == ("offered", call)


async def _offered_to(store: QueueStore, call: SimulatedCall) -> str | None:
    for agent in ("alice", "bob"):
        status = await store.agent(agent)
        if status is not None and status.offer == call.call_id:
            return agent
    return None


async def _keys(client: aioredis.Redis, pattern: str) -> list[str]:
    return [key async for key in client.scan_iter(pattern)]

