"""Callback in queue on the real engines: the caller presses 5, confirms their number and
hangs up; the browser agent accepts the callback; the worker originates the call to the
customer, a SIP phone (tests/sip_ua.py) that is busy the first time (486), or rings
unanswered through the queue's ring time, and answers the retry; the answered customer is
connected to the agent's LiveKit room (the LiveKit SIP stand-in gets the INVITE for the
callback's room). The history lands in PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from api_support import LiveKitStandIn
from conftest import REAL_TARGETS, time_scale
from sip_ua import SipEndpoint, wait_until
from test_agents_real import console, login, logout, offered, seen  # noqa: F401

from appserver.devkit.sim.caller import EngineSimulator
from appserver.store.extensions import Extension, delete_extension, save_extension
from appserver.store.members import QueueMember, remove_member, save_member
from appserver.store.queues import Queue, delete_queue, save_queue

NUMBER = "8114"  # a number of its own (tests/ivr_menus.py seeds 81xx)
CUSTOMER = "+15550805"


FIRST = ("busy", "no_answer")  # the first call to the customer
RING_SECONDS = {"busy": 10, "no_answer": 5}  # the queue's callback_ring_seconds


@pytest.fixture
async def customer(first: str) -> AsyncIterator[SipEndpoint]:
    """The customer's phone: busy or not answering the first call, answers the next ones."""
    phone: SipEndpoint | None = None

    def policy(_invite: object) -> str:
        assert phone is not None
        return first if len(phone.invites) == 1 else "answer"

    phone = SipEndpoint(user="customer", audio="tone", policy=policy)  # type: ignore[arg-type]
    await phone.start()
    yield phone
    phone.close()


async def define_callback_queue(database: str, redis_url: str, phone: SipEndpoint,
                                ring_seconds: int) -> None:
    """Queue t-callback (agent t-web, callbacks on 5, retried after 1 s) on 8114, published
    by ``callyard api`` to Redis."""
    at = f"{phone.host}:{phone.port}"
    conn = await asyncpg.connect(database)
    try:
        await save_queue(conn, Queue(
            "t-callback", announce_interval=0, wrapup_seconds=0, callback_key="5",
            callback_max_attempts=3, callback_retry_seconds=1,
            callback_ring_seconds=ring_seconds,
            callback_freeswitch_endpoint=f"sofia/callyard/{{number}}@{at}",
            callback_asterisk_endpoint=f"PJSIP/kamailio/sip:{{number}}@{at}"))
        await save_member(conn, QueueMember("t-callback", "t-web"))
        await save_extension(conn, Extension(NUMBER, "queue", "t-callback"))
    finally:
        await conn.close()
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        conf = "{callyard:q}:queue:t-callback:conf"
        deadline = time.monotonic() + 15
        while f"@{at}" not in (await redis.hget(conf, "callback_freeswitch_endpoint") or ""):
            assert time.monotonic() < deadline, "the queue was not published"
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    await asyncio.sleep(6)  # workers re-read the queue definitions every 5 s


async def remove_callback_queue(database: str) -> None:
    """Leave the session's shared agent and numbers as they were: t-web out of t-callback,
    and the queue (with any callback a failed run left in it) gone."""
    conn = await asyncpg.connect(database)
    try:
        await delete_extension(conn, NUMBER)
        await remove_member(conn, "t-callback", "t-web")
        await delete_queue(conn, "t-callback")
    finally:
        await conn.close()


@pytest.mark.parametrize("first", FIRST)
@pytest.mark.parametrize("target", REAL_TARGETS)
async def test_callback_answered_on_the_retry(
    engine: EngineSimulator, target: str, first: str, real_database: str, real_redis_url: str,
    livekit: tuple[LiveKitStandIn, SipEndpoint], customer: SipEndpoint,
    console: httpx.AsyncClient,  # noqa: F811
) -> None:
    scale = time_scale(target)
    _, livekit_sip = livekit
    await define_callback_queue(real_database, real_redis_url, customer, RING_SECONDS[first])
    try:
        await callback_answered_on_the_retry(engine, target, first, scale, livekit_sip,
                                             customer, console, real_database, real_redis_url)
    finally:
        await remove_callback_queue(real_database)


async def dialled_from_the_callers_node(redis_url: str, engine: str, entry: str) -> None:
    """The callback keeps the engine and node its caller came in on, and a worker of that
    engine reaches the node by the same name (FreeSWITCH: ``api hostname`` on its inbound
    ESL = the call's ``FreeSWITCH-Hostname``; Asterisk: the ARI address). The simulators'
    workers in the session reach other nodes: they leave the callback alone."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        kind, node = await redis.hmget(f"{{callyard:q}}:call:{entry}", "cb_engine", "cb_node")
        assert kind == engine and node, (kind, node)
        assert await redis.zscore("{callyard:q}:callbacks:nodes", f"{kind}/{node}"), node
    finally:
        await redis.aclose()


async def callback_answered_on_the_retry(
    engine: EngineSimulator, target: str, first: str, scale: float, livekit_sip: SipEndpoint,
    customer: SipEndpoint, console: httpx.AsyncClient, real_database: str,  # noqa: F811
    redis_url: str,
) -> None:
    call = await engine.place_call(NUMBER, caller=CUSTOMER)
    await seen(call, "moh", "default", 10 * scale)
    await call.press("5")
    await seen(call, "prompt_started", "file:queue/callback_confirm_keys", 10 * scale)
    await call.press("1")
    await seen(call, "prompt_started", "file:queue/callback_registered", 10 * scale)
    await call.wait_ended(15 * scale)
    await dialled_from_the_callers_node(redis_url, target, call.call_id)
    auth = await login(console, "t-web")
    try:
        for attempt in (1, 2):  # busy or unanswered, then answered on the retry
            await offered(console, auth, call, 15 * scale)
            r = await console.post("/api/agent/accept", json={"call": call.call_id},
                                   headers=auth)
            assert r.status_code == 200 and r.json()["ok"], r.text
            await wait_until(lambda n=attempt: len(customer.invites) >= n, 25 * scale)
        room = f"call-{call.call_id}"  # the room the agent entered on accepting
        await wait_until(lambda: any(i.user == room for i in livekit_sip.invites), 20 * scale)
        assert [i.user for i in customer.invites] == [CUSTOMER, CUSTOMER]
        assert (await console.post("/api/agent/hangup", headers=auth)).status_code == 200
    finally:
        await logout(console, auth)
    conn = await asyncpg.connect(real_database)
    try:
        deadline = time.monotonic() + 15
        while (row := await conn.fetchrow("SELECT * FROM callbacks WHERE call_id = $1",
                                          call.call_id)) is None or row["status"] != "answered":
            assert time.monotonic() < deadline, row
            await asyncio.sleep(0.2)
        attempts = await conn.fetch("SELECT outcome, cause FROM callback_attempts"
                                    " WHERE call_id = $1 ORDER BY attempt", call.call_id)
        assert [a["outcome"] for a in attempts] == [first, "answered"]
        if first == "busy":
            assert attempts[0]["cause"] == "USER_BUSY"
        assert row["number"] == CUSTOMER and row["agent"] == "t-web"
    finally:
        await conn.close()
