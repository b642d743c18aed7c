"""Redis Sentinel and Redis Cluster, on real servers on loopback (tests/redis_ha.py).

Sentinel: ``CALLYARD_REDIS_URL=redis+sentinel://...`` for every client (the factory
:mod:`appserver.redisconn`); the primary is killed during calls and the workers, the queue
state and the CDR stream carry on on the promoted replica, nothing lost or doubled.

Cluster: the queue keys share one slot (their hash tag), so every queue script runs on a
cluster, on the one node that owns only that slot: a key outside it would fail the script.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError
from redis_ha import cluster, sentinel_set
from test_cdr_asterisk import drain_cdrs
from test_queue_outages import (
    QUEUE,
    WORKERS,
    _keys,
    _offered,
    _offered_to,
    alice_and_bob_queue,
    eventually,
    queued,
    waiting_callers,
)

from appserver.queues import scripts
from appserver.queues.agent_control import AgentControl
from appserver.queues.model import KEY_PREFIX, AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueError, QueueStore
from appserver.redisconn import connect, parse_sentinel_url
from appserver.settings import SettingsError, load_settings
from appserver.shells import close

# ------------------------------------------------------------------------------ the URL


def test_sentinel_url_is_read() -> None:
    url = parse_sentinel_url(
        "redis+sentinel://:s3cret@10.0.0.1:26380,sentinel-b,[::1]:26381/main/2"
        "?sentinel_password=s2")
    assert url.sentinels == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381))
    assert (url.service, url.db, url.username, url.password, url.sentinel_password) == (
        "main", 2, None, "s3cret", "s2")
    assert parse_sentinel_url("redis+sentinel://h1/main").db == 0


@pytest.mark.parametrize(("value", "expected"), [
    ("redis+sentinel://:pw@h1:26379", "service name"),
    ("redis+sentinel://:pw@h1:26379/main/zero", "service name, database"),
    ("redis+sentinel://:pw@h1:port/main", "host:port of a sentinel, got 'h1:port'"),
    ("redis+sentinel://h1/main?timeout=3", "only sentinel_password"),
    ("memcached://h1:11211", "redis+sentinel://:password@host1:26379,host2:26379/service/db"),
])
def test_bad_redis_url_is_refused_with_the_form(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("CALLYARD_REDIS_URL", value)
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    assert "CALLYARD_REDIS_URL:" in str(excinfo.value) and expected in str(excinfo.value)
    assert "pw" not in str(excinfo.value)


# ------------------------------------------------------------------------------ Sentinel


# The API, CDR writer and tools; the Asterisk worker; the FreeSWITCH worker (gevent).
@pytest.mark.parametrize(("flavour", "bounded"), [
    ("asyncio", False), ("asyncio", True), ("sync", True)])
async def test_factory_clients_carry_on_after_a_failover(
    scratch_dir: Path, flavour: str, bounded: bool) -> None:
    """A client of each kind writes, the primary dies, the next writes go to the promoted
    replica without an error reaching the caller, and nothing written is lost."""
    with sentinel_set(scratch_dir / "sentinel") as topology:
        client = connect(topology.url, flavour, bounded=bounded)  # type: ignore[arg-type]

        async def incr() -> int:
            answer = client.incr("counter")
            return int(await answer if flavour == "asyncio" else answer)

        try:
            assert [await incr() for _ in range(3)] == [1, 2, 3]
            old = await asyncio.to_thread(topology.kill_primary)
            assert await incr() == 4  # sent while Sentinel fails over: retried until promoted
            assert await asyncio.to_thread(topology.wait_failover, old) != old
            assert await incr() == 5
        finally:
            await close(client)


@pytest.mark.parametrize("engine", ["asterisk", "freeswitch"])
async def test_calls_queue_and_cdrs_survive_a_primary_failover(
    engine: str, scratch_dir: Path, pg_pool: asyncpg.Pool) -> None:
    """A worker on a Sentinel URL, five callers queued; one hangs up and its CDR is stored;
    alice is offered the first. The primary dies: meanwhile a caller hangs up and another
    joins. On the promoted replica the queue holds exactly the live callers, alice
    still has her offer; the agents take every live caller; each call ends with one CDR
    (the CDR writer's consumer group and its stream survived) and nothing left in Redis."""
    with sentinel_set(scratch_dir / "sentinel") as topology:
        client = connect(topology.url, "asyncio")
        try:
            store = await alice_and_bob_queue(client)
            control = AgentControl(store)
            waiting = waiting_callers(store)
            async with WORKERS[engine](topology.url) as sim:
                callers = [await queued(sim, f"+1555000{i}") for i in range(5)]
                ids = [c.call_id for c in callers]

                await eventually("five callers waiting", waiting, lambda w: w == set(ids))
                await callers[4].hangup()  # its CDR is written before the failover
                await callers[4].wait_ended(10)
                assert await drain_cdrs(client, pg_pool, 1) == 1
                await control.login("alice")
                await eventually("alice offered the first caller",
                                 lambda: store.agent("alice"), _offered(ids[0]))

                old = await asyncio.to_thread(topology.kill_primary)
                await callers[3].hangup()
                late = await queued(sim, "+15550009")
                await callers[3].wait_ended(10)
                assert await asyncio.to_thread(topology.wait_failover, old) != old

                live = [*callers[:3], late]
                await eventually("exactly the live callers waiting", waiting,
                                 lambda w: w == {c.call_id for c in live})
                alice = await store.agent("alice")
                assert alice is not None and (alice.state, alice.offer) == ("offered", ids[0])
                await control.login("bob")
                for call in live:
                    taker = await eventually(f"{call.call_id} offered",
                                             lambda c=call: _offered_to(store, c),  # type: ignore[misc]
                                             lambda agent: agent is not None)
                    assert taker is not None and (await control.accept(taker, call.call_id)).ok
                    await call.transcript.wait_for(lambda e: e.kind == "bridged", 10)
                    await call.wait_ended(15)

                stats = await store.stats(QUEUE)
                assert (stats.joined, stats.answered, stats.abandoned, stats.waiting) == (
                    6, 4, 2, 0)
                await eventually("no queue entry left", lambda: _keys(client, "*call:*"),
                                 lambda keys: keys == [])
                for agent in ("alice", "bob"):
                    status = await store.agent(agent)
                    assert status is not None and (status.state, status.call) == (
                        "available", ""), status
                everyone = {*ids, late.call_id}
                assert await drain_cdrs(client, pg_pool, len(everyone), 20) == len(everyone)
                rows = await pg_pool.fetch("SELECT call_id FROM cdrs")
                assert sorted(r["call_id"] for r in rows) == sorted(everyone)
        finally:
            await client.aclose()


# ------------------------------------------------------------------------------ Cluster


def test_every_queue_key_has_the_prefix_hash_tag() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        QueueStore(redis.Redis(), prefix="callyard:q:")
    slots = {redis.cluster.key_slot(key.encode()) for key in (
        KEY_PREFIX + "queues", KEY_PREFIX + "agent:{x}", KEY_PREFIX + "call:a{b}c")}
    assert len(slots) == 1


async def test_queue_scripts_run_on_a_cluster_in_one_slot(scratch_dir: Path) -> None:
    """Every queue script and read, through a cluster client, on a cluster whose node for
    the queue keys owns only their slot (the first test shows such a node refuses a key
    outside it)."""
    with cluster(scratch_dir / "cluster", KEY_PREFIX) as nodes:
        client = RedisCluster(host="127.0.0.1", port=nodes.only_port, decode_responses=True)
        try:
            with pytest.raises(ResponseError):  # the rule broken: a key without the tag
                await client.eval("return redis.call('SET', 'callyard:q:queues', 1)", 1,
                                  KEY_PREFIX + "queues")
            await _every_queue_operation(QueueStore(client))
        finally:
            await client.aclose()


async def _every_queue_operation(store: QueueStore) -> None:
    ran: set[str] = set()
    run = store._run

    async def counting(name: str, *args: object) -> object:
        ran.add(name)
        return await run(name, *args)

    store._run = counting  # type: ignore[method-assign]
    control = AgentControl(store)
    for agent in ("alice", "bob", "carol"):
        await store.sync_agent(AgentConfig(agent))
    await store.sync_queue(QueueConfig("sales", strategy="longest_idle", ring_timeout=1,
                                       wrapup_seconds=0),
                           [Member("alice"), Member("bob")])
    await store.sync_queue(QueueConfig("spare"), [Member("carol")])
    for agent in ("alice", "bob"):
        await control.login(agent)
    t = 1_000_000
    for call in ("c1", "c2", "c3"):
        assert (await store.enqueue("sales", call, "w1", now=t)).status == "ok"
    offers = await store.match("sales", now=t)
    assert {o.call_id for o in offers} == {"c1", "c2"}
    by_call = {o.call_id: o.agent for o in offers}
    assert (await store.accept(by_call["c1"], "c1", now=t + 1)).ok
    assert await store.decline(by_call["c2"], "c2", now=t + 1)
    try:  # runs in the slot whatever it answers (c1's agent has not answered yet)
        await store.supervise("c1", "sup", "start", "listen")
    except QueueError as exc:
        assert exc.code == "not_connected"
    await store.call_control(by_call["c1"], "hold", now=t + 2)
    await store.dial_failed("c1", by_call["c1"], now=t + 3)
    await store.tick("w1", now=t + 4)
    assert (await store.take_over("c2", "w2", now=t + 5)).queue == "sales"
    await store.leave("c2", "abandoned", now=t + 6)
    await store.finish("c1", now=t + 7)
    assert (await store.move_call("c3", priority=5, now=t + 7)).priority == 5
    assert (await store.today("sales", t, now=t + 7))["joined"] == 3
    assert await store.hang_up("c3", now=t + 7) == "sent"
    await store.reap(now=t + 10**9)
    await store.stats("sales", now=t + 8)
    await store.publish_stats(now=t + 8)
    assert await store.take_stats_turn("w1", 1.0)
    assert await store.pop_inbox("w1", 0.01) is not None
    await store.queue_calls("sales")
    await store.queued_call("c3")
    assert await store.agent("alice") is not None
    await store.queue_names()
    await store.queue_config("sales")
    await store.agent_names()
    await store.agent_action("carol", "login")
    await _callback_operations(store, "carol", t + 20)
    # The runtime's batches: a pipeline of the scripts, sent to the slot's node.
    joined, left, matched = await store.batch([
        store.enqueue_op("sales", "c9", "w1", now=t + 30),
        store.leave_op("c9", "abandoned", now=t + 30), store.match_op("sales", now=t + 30)])
    assert (joined.status, left, matched) == ("ok", "waiting", [])
    await store.drop_agent("carol")
    await store.drop_queue("spare")
    assert ran == set(scripts.SCRIPT_NAMES)


async def _callback_operations(store: QueueStore, agent: str, t: int) -> None:
    """A callback in queue "spare" (its history stream, the nodes workers reach and the
    rename of its entry to the answered channel's call id stay in the slot), answered by
    ``agent``."""
    await store.sync_queue(QueueConfig("spare", callback_key="5"), [Member(agent)])
    await store.enqueue("spare", "cb1", "w1", now=t, caller="5550100")
    assert await store.request_callback("cb1", "5550100", now=t + 1, engine="asterisk",
                                        node="pbx1:8088") == 1
    assert [o.call_id for o in await store.match("spare", now=t + 2)] == ["cb1"]
    assert (await store.accept(agent, "cb1", now=t + 3)).ok
    dials = await store.claim_callbacks("w1", 60_000, now=t + 4, engine="asterisk",
                                        nodes=["pbx2:8088", "pbx1:8088"])
    assert [(d.entry, d.node) for d in dials] == [("cb1", "pbx1:8088")]
    assert (await store.callback_result("cb1", "answered", now=t + 5)).status == "answered"
    assert (await store.callback_answered("cb1", "leg1", "w1", now=t + 6)).agent == agent
    assert await store.finish("leg1", now=t + 7)

