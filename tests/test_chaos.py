"""Everything fails at once, under load: two workers per engine, a worker killed, the Redis
primary and the PostgreSQL primary failed over; every call is accounted for.

Two engine nodes (a FreeSWITCH and an Asterisk simulator), each with two worker processes
(FreeSWITCH: two ``socket`` addresses tried in order; Asterisk: Stasis applications
``callyard`` and ``callyard-2``), one Redis behind three Sentinels, a PostgreSQL primary with a
streaming replica, one ``callyard cdr-writer`` on the multi-host URL, four agents answering
every offer. Callers arrive all along: some wait in the queue for an agent, some give up in
the queue, some dial through the menu, some hang up during the greeting. Meanwhile the first
worker of each engine is killed (SIGKILL) and restarted by "its supervisor", the Redis primary
is killed (Sentinel promotes the replica) and the PostgreSQL primary crashes (the replica is
promoted). At the end every call has ended (served, or ended by the caller or the server, not
left hanging), has exactly one CDR on the new PostgreSQL primary, no queue entry is left and
every agent is available.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from pg_replication import PgPair
from redis.exceptions import RedisError
from redis_ha import SentinelSet, sentinel_set
from test_faults import env, until
from test_pg_failover import fetchval, pg_pair, run_cli  # noqa: F401  (pg_pair: a fixture)
from test_queue_outages import QUEUE, TALK, _keys, _listening

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint
from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore
from appserver.redisconn import connect

AGENTS = ("alice", "bob", "carol", "dave")
CALLS_PER_S = 4.0  # per engine node
ANSWER_AFTER = 1.0  # seconds an offer rings before its agent answers
LOAD_SECONDS = 24.0
# seconds after the load started
KILL_WORKERS, RESTART_WORKERS, FAIL_REDIS, FAIL_POSTGRES = 5.0, 8.0, 11.0, 16.0
SCENARIO_SECONDS = 240  # load, faults and every check (about 75 s on a quiet 2-core box)


class Worker:
    """One ``callyard freeswitch|asterisk`` process; its log goes to a file (a pipe nobody
    reads would block it once full)."""

    def __init__(self, log: Path, *args: str, **settings: str) -> None:
        self.log, self.args, self.settings = log, args, settings
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appserver.cli", *self.args,
                env=env(**{"CALLYARD_LOG_LEVEL": "INFO", **self.settings}),
                stdout=log, stderr=log)

    async def kill(self) -> None:
        assert self.proc is not None and self.proc.returncode is None, self.text()[-3000:]
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 10)
        return self.proc.returncode or 0

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Node:
    """An engine simulator and its two workers (the first is the one killed)."""

    engine: str
    sim: EngineSimulator
    workers: list[Worker]
    ready: Callable[[int], Awaitable[None]]


@asynccontextmanager
async def freeswitch_node(logs: Path, redis_url: str) -> AsyncIterator[Node]:
    listen = [free_port(), free_port()]
    sim = FreeswitchSimulator([("127.0.0.1", port) for port in listen],
                              Behaviour(prompt_seconds=0.1, talk_seconds=TALK))
    await sim.start()
    workers = [Worker(logs / f"freeswitch-{i}.log", "freeswitch", "--flow-factory",
                      "flows:factory", CALLYARD_REDIS_URL=redis_url,
                      CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{port}",
                      CALLYARD_FREESWITCH_ESL=f"127.0.0.1:{sim.esl_port}:{sim.password}")
               for i, port in enumerate(listen)]

    async def ready(i: int) -> None:
        await until(lambda: _listening(listen[i]), 20, f"FreeSWITCH worker {i} listening")

    try:
        yield Node("freeswitch", sim, workers, ready)
    finally:
        await sim.stop()


@asynccontextmanager
async def asterisk_node(logs: Path, redis_url: str) -> AsyncIterator[Node]:
    apps = ("callyard", "callyard-2")
    sim = AriSimulator(unknown_endpoint=SimEndpoint("PJSIP", "any", talk_seconds=TALK),
                       stasis_apps=apps)
    await sim.start()
    workers = [Worker(logs / f"asterisk-{i}.log", "asterisk", "--flow-factory",
                      "flows:factory", CALLYARD_REDIS_URL=redis_url,
                      CALLYARD_ASTERISK_APP=app,
                      CALLYARD_ASTERISK_ARI=sim.url_with_credentials)
               for i, app in enumerate(apps)]

    async def ready(i: int) -> None:
        await sim.wait_app_connected(apps[i], 20)

    try:
        yield Node("asterisk", sim, workers, ready)
    finally:
        await sim.stop()


# ------------------------------------------------------------------------------ callers


@dataclass
class Caller:
    """What one caller does each time they hear the greeting (again, if a worker died)."""

    node: Node
    kind: str  # served | abandons | dials | hangs_up | lingers
    call: SimulatedCall | None = None
    greetings: int = 0
    worker_killed: bool = False  # in progress when its worker was killed

    async def run(self, number: int) -> None:
        self.call = call = await self.node.sim.place_call("9999", caller=f"+1555{number:07d}")
        seen = 0
        while (seen := await self._next_greeting(seen)) >= 0:
            self.greetings += 1
            if self.greetings > 3:
                break  # a caller who hears the greeting over and over gives up
            await self._act(call)
        if not call.ended:
            await call.hangup()
        await call.wait_ended(10)

    async def _next_greeting(self, seen: int, timeout: float = 60) -> int:
        """The index after the next greeting from ``seen`` on; -1 once the call ended."""
        assert self.call is not None
        entries = self.call.transcript.entries
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(seen, len(entries)):
                if entries[i].kind == "hangup":
                    return -1
                if entries[i].kind == "prompt_started" and entries[i].detail == "file:ivr/welcome":
                    return i + 1
            seen = len(entries)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.call.call_id} ({self.node.engine}, {self.kind}) neither "
                             f"heard the greeting nor ended: {self.call.transcript.lines()}")

    async def _act(self, call: SimulatedCall) -> None:
        if self.kind in ("hangs_up", "lingers"):  # during the greeting, or in the menu
            await asyncio.sleep(0.3 if self.kind == "hangs_up" else 4.0)
            if not call.ended:
                await call.hangup()
        elif self.kind == "dials":
            await call.press("1")  # sales
            await asyncio.sleep(0.4)
            await call.press("1")  # dial 1001: answered, talks, hangs up
        else:
            await call.press("9")  # the queue
            if self.kind == "abandons":
                await asyncio.sleep(2.0)
                if not call.ended:
                    await call.hangup()


KINDS = ("served", "abandons", "dials", "served", "hangs_up", "lingers")


async def place_calls(nodes: list[Node], callers: list[Caller]) -> None:
    """CALLS_PER_S new callers per node for LOAD_SECONDS; returns once every one ended."""
    tasks = []
    for n in range(int(CALLS_PER_S * LOAD_SECONDS)):
        for node in nodes:
            caller = Caller(node, KINDS[n % len(KINDS)])
            callers.append(caller)
            tasks.append(asyncio.create_task(caller.run(len(callers))))
        await asyncio.sleep(1 / CALLS_PER_S)
    await asyncio.gather(*tasks)


# ------------------------------------------------------------------------------ agents


@dataclass
class Agents:
    """The agents answer every offer once it rang ANSWER_AFTER seconds. One whose call was
    lost with its worker (``away``, reason ``call_lost``: the console shows it) makes
    themselves available again, as an agent in the browser does once the call is over. A
    request that fails while Redis fails over is tried again on the next round (counted)."""

    control: AgentControl
    answered: int = 0
    lost: int = 0
    ringing: dict[str, float] = field(default_factory=dict)  # call id -> first seen offered
    retried: collections.Counter[str] = field(default_factory=collections.Counter)
    # Stopped by this flag, not by cancelling: redis-py may swallow a cancellation that lands
    # in a command (seen in CI: the loop went on until the scenario's timeout).
    stopping: bool = False

    async def run(self) -> None:
        store = self.control.store
        while not self.stopping:
            for agent in AGENTS:
                try:
                    status = await store.agent(agent)
                    if status is None:
                        continue
                    if status.state == "offered":
                        since = self.ringing.setdefault(status.offer, time.monotonic())
                        if time.monotonic() - since < ANSWER_AFTER:
                            continue
                        if (await self.control.accept(agent, status.offer)).ok:
                            self.answered += 1
                    elif (status.state, status.reason) == ("away", "call_lost"):
                        await self.control.set_available(agent)
                        self.lost += 1
                except (RedisError, OSError) as exc:
                    self.retried[type(exc).__name__] += 1
            await asyncio.sleep(0.1)


# ------------------------------------------------------------------------------ the test


@pytest.mark.timeout(400)
@pytest.mark.asyncio(loop_scope="function")  # an event loop of its own: nothing else runs on it
async def test_two_workers_per_engine_a_worker_redis_and_postgresql_fail_under_load(
        scratch_dir: Path, pg_pair: PgPair) -> None:  # noqa: F811
    logs = scratch_dir / "logs"
    logs.mkdir()
    dsn = pg_pair.url()
    status, out = await run_cli("migrate", CALLYARD_DATABASE_URL=dsn)
    assert status == 0, out
    with sentinel_set(scratch_dir / "sentinel") as redis_set:
        client = connect(redis_set.url, "asyncio")
        store = QueueStore(client)
        for agent in AGENTS:
            await store.sync_agent(AgentConfig(agent))
        await store.sync_queue(QueueConfig(QUEUE, ring_timeout=120, wrapup_seconds=0),
                               [Member(agent) for agent in AGENTS])
        control = AgentControl(store)
        for agent in AGENTS:
            await control.login(agent)
        agents = Agents(control)
        writer = Worker(logs / "cdr-writer.log", "cdr-writer", "--claim-idle", "2",
                        CALLYARD_DATABASE_URL=dsn, CALLYARD_REDIS_URL=redis_set.url)
        callers: list[Caller] = []
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(freeswitch_node(logs, redis_set.url)),
                     await stack.enter_async_context(asterisk_node(logs, redis_set.url))]
            everyone = [writer, *(w for node in nodes for w in node.workers)]
            try:
                async with asyncio.timeout(SCENARIO_SECONDS):  # a hang fails with the logs
                    for process in everyone:
                        await process.start()
                    for node in nodes:
                        await node.ready(0)
                        await node.ready(1)
                    agent_task = asyncio.create_task(agents.run())
                    load = asyncio.create_task(place_calls(nodes, callers))
                    faults = asyncio.create_task(inject_faults(nodes, callers, redis_set, pg_pair))
                    await asyncio.wait_for(asyncio.gather(load, faults), LOAD_SECONDS + 75)

                    # No ghost: nothing waiting, no call entry, every agent available.
                    await until(lambda: _no_queue_entry(client), 30, "no queue entry left")
                    await until(lambda: _all_available(store), 30, "every agent available")
                    agents.stopping = True
                    await agent_task

                    # Exactly one CDR per call, on the promoted PostgreSQL primary.
                    ids = {c.call.call_id for c in callers if c.call is not None}
                    assert len(ids) == len(callers)
                    await until(lambda: fetchval(
                        dsn, f"SELECT count(*) >= {len(ids)} FROM cdrs"), 60, "every CDR stored")
                    await asyncio.sleep(1)  # nothing more may arrive
                    rows = await _cdrs(dsn)
            except BaseException:
                for process in everyone:  # what the processes said, for the failure's log
                    print(f"----- {process.log.name}\n{process.text()}")
                for caller in callers:
                    if caller.call is not None and not caller.call.ended:
                        print("still up:", caller.node.engine, caller.kind,
                              caller.call.call_id, caller.call.transcript.lines())
                raise
            finally:
                stopped = await asyncio.gather(*(process.stop() for process in everyone))
                codes = {p.log.name: code for p, code in zip(everyone, stopped, strict=True)}
            report(callers, rows, agents)
            stored = [r["call_id"] for r in rows]
            assert sorted(stored) == sorted(ids), "a call without a CDR, or one too many"
            assert await client.xlen("callyard:cdrs") == 0
            for node in nodes:  # the kill hit calls in progress, on both engines
                hit = [c for c in callers if c.node is node and c.worker_killed]
                assert len(hit) >= 5, f"{node.engine}: {len(hit)} calls in progress at the kill"
            served = [c for c in callers if _bridged_to_agent(c)]
            assert agents.answered >= len(served) > 0
            # What the caller lived is what the CDR says, for the calls one worker served
            # from start to end (a call its worker lost was started again by another).
            for caller in (c for c in served if c.greetings == 1):
                cdr = rows[stored.index(caller.call.call_id)]  # type: ignore[union-attr]
                assert (cdr["disposition"], cdr["queue"]) == ("answered", QUEUE), dict(cdr)
                assert cdr["agent"] in AGENTS, dict(cdr)
            for worker in everyone:  # the survivors stopped cleanly, and said nothing broken
                assert "Traceback" not in worker.text(), worker.text()[-4000:]
                assert codes[worker.log.name] == 0, worker.text()[-4000:]
        await client.aclose()


async def inject_faults(nodes: list[Node], callers: list[Caller], redis_set: SentinelSet,
                        pg: PgPair) -> None:
    """The faults, at their seconds after the load started. The calls in progress when the
    workers are killed are marked (each node's first worker takes every new call)."""
    started = time.monotonic()

    async def at(second: float) -> None:
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))

    await at(KILL_WORKERS)
    for node in nodes:
        await node.workers[0].kill()
    for caller in callers:
        caller.worker_killed = caller.call is not None and not caller.call.ended
    await at(RESTART_WORKERS)  # their supervisor restarts them
    for node in nodes:
        await node.workers[0].start()
        await node.ready(0)
    await at(FAIL_REDIS)
    old = await asyncio.to_thread(redis_set.kill_primary)
    await at(FAIL_POSTGRES)
    await asyncio.to_thread(pg.crash_primary)
    await asyncio.sleep(1.0)  # a while without a primary
    await asyncio.to_thread(pg.promote_replica)
    assert await asyncio.to_thread(redis_set.wait_failover, old) != old


def _bridged_to_agent(caller: Caller) -> bool:
    """Bridged to an agent's browser (the LiveKit room ``call-<call id>``)."""
    assert caller.call is not None
    room = f"call-{caller.call.call_id}"
    return any(e.kind == "bridged" and e.detail == room for e in caller.call.transcript.entries)


async def _no_queue_entry(client: aioredis.Redis) -> bool:
    return await _keys(client, "*call:*") == [] and not await client.zcard(
        QueueStore(client).keys.waiting(QUEUE))


async def _all_available(store: QueueStore) -> bool:
    for agent in AGENTS:
        status = await store.agent(agent)
        if status is None or (status.state, status.call) != ("available", ""):
            return False
    return True


async def _cdrs(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT call_id, disposition, queue, agent, hangup_cause "
                                "FROM cdrs ORDER BY call_id")
    finally:
        await conn.close()


def report(callers: list[Caller], rows: list[asyncpg.Record], agents: Agents) -> None:
    """What happened, for the log and the issue's note."""
    outcomes: collections.Counter[tuple[str, ...]] = collections.Counter()
    for caller in callers:
        assert caller.call is not None
        hangup = next(e for e in caller.call.transcript.entries if e.kind == "hangup")
        outcomes[(caller.node.engine, caller.kind, "by " + hangup.detail.split(" ")[-1],
                  "agent" if _bridged_to_agent(caller) else "",
                  "greeted-again" if caller.greetings > 1 else "",
                  "worker-killed" if caller.worker_killed else "")] += 1
    print(f"\n{len(callers)} calls, {agents.answered} answered by agents, {agents.lost} "
          f"agent calls lost with their worker, agent requests retried "
          f"{dict(agents.retried)}; dispositions "
          f"{dict(collections.Counter(r['disposition'] for r in rows))}")
    for key, count in sorted(outcomes.items()):
        print(f"  {count:4d} {' '.join(k for k in key if k)}")
    if os.environ.get("CALLYARD_CHAOS_VERBOSE"):
        for caller in callers:
            assert caller.call is not None
            print(caller.call.call_id, caller.kind, caller.call.transcript.lines())

