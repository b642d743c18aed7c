"""Callback settings through the admin API and PostgreSQL to the workers' Redis, the
callback figures of ``/api/stats/queues``, and the callback history in PostgreSQL."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from api_support import api_app

from appserver.api.console_hub import offer_details
from appserver.cdr.writer import CallbackHistoryWriter
from appserver.queues import config
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore

SETTINGS = {"callback_key": "7", "callback_max_attempts": 4, "callback_retry_seconds": 120,
            "callback_ring_seconds": 25, "callback_announce": False,
            "callback_freeswitch_endpoint": "sofia/gateway/carrier/{number}",
            "callback_asterisk_endpoint": "PJSIP/{number}@carrier"}


async def test_callback_settings_reach_the_workers(pg_pool: asyncpg.Pool,
                                                   redis_client: aioredis.Redis) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        r = await c.put("/api/queues/support", json=SETTINGS)
        assert r.status_code == 200, r.text
        assert {k: r.json()[k] for k in SETTINGS} == SETTINGS
        assert (await c.get("/api/queues/support")).json()["callback_key"] == "7"
        for bad in ({"callback_key": "77"}, {"callback_max_attempts": 0},
                    {"callback_freeswitch_endpoint": "sofia/gateway/carrier/5550100"},
                    {"callback_asterisk_endpoint": "PJSIP/{number}, x"},
                    {"callback_key": "0", "exit_key": "0", "exit_action": "hangup"}):
            r = await c.put("/api/queues/other", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert (await c.get("/api/queues/other")).status_code == 404  # nothing half-saved
        r = await c.put("/api/queues/plain", json={})
        assert r.json()["callback_key"] is None
    store = QueueStore(redis_client)
    snap = await config.reload(pg_pool, store)
    assert snap.errors == []
    support = await store.queue_config("support")
    plain = await store.queue_config("plain")
    assert support is not None and plain is not None
    assert (support.callback_key, support.callback_max_attempts,
            support.callback_freeswitch_endpoint) == ("7", 4, "sofia/gateway/carrier/{number}")
    assert plain.callback_key == ""  # NULL in SQL: no callbacks


async def test_queue_stats_show_waiting_callbacks(pg_pool: asyncpg.Pool,
                                                  redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("ann"))
    await store.sync_queue(QueueConfig("support", callback_key="5"), [Member("ann")])
    await store.enqueue("support", "c1", "w1", caller="5550100")
    await store.enqueue("support", "c2", "w1", caller="5550200")
    await store.request_callback("c2", "5550200")
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        [stats] = (await c.get("/api/stats/queues")).json()
    assert (stats["waiting"], stats["callbacks_waiting"], stats["callbacks_dialing"],
            stats["callbacks_requested"]) == (1, 1, 0, 1)
    assert stats["callback_estimate"] == 0.0  # no agent staffed, no handle time known yet
    # The console marks the offer as a callback, with the number Callyard will call.
    assert (await offer_details(store, "c2"))["callback"] == "5550200"
    assert (await offer_details(store, "c1"))["callback"] == ""


async def test_callback_history_in_postgresql(pg_pool: asyncpg.Pool,
                                              redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("ann"))
    await store.sync_queue(QueueConfig("support", callback_key="5", callback_max_attempts=2,
                                       callback_retry_seconds=1), [Member("ann")])
    await store.agent_action("ann", "login", now=1_000)
    await store.enqueue("support", "c1", "w1", caller="5550100", now=2_000)
    await store.request_callback("c1", "5550100", now=3_000)
    await store.match("support", now=4_000)
    await store.accept("ann", "c1", now=4_100)
    await store.claim_callbacks("w1", 60_000, now=4_200)
    await store.callback_result("c1", "busy", "USER_BUSY", now=5_000)
    await store.match("support", now=6_500)
    await store.accept("ann", "c1", now=6_600)
    await store.claim_callbacks("w2", 60_000, now=6_700)
    await store.callback_result("c1", "answered", "SUCCESS", now=8_000)
    await store.callback_answered("c1", "leg-9", "w3", now=8_100)
    writer = CallbackHistoryWriter(redis_client, pg_pool, block_ms=10)
    await writer.ensure_group()
    while await writer.step():
        pass
    while await writer.step():  # again: nothing left, nothing applied twice
        pass
    row = await pg_pool.fetchrow("SELECT * FROM callbacks WHERE call_id = 'c1'")
    assert (row["queue"], row["number"], row["status"], row["attempts"], row["agent"],
            row["answered_call_id"]) == ("support", "5550100", "answered", 2, "ann", "leg-9")
    attempts = await pg_pool.fetch(
        "SELECT attempt, agent, worker, outcome, cause FROM callback_attempts"
        " WHERE call_id = 'c1' ORDER BY attempt")
    assert [tuple(a) for a in attempts] == [(1, "ann", "w1", "busy", "USER_BUSY"),
                                           (2, "ann", "w2", "answered", "SUCCESS")]
    assert writer.stats.dead == 0
