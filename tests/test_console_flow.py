"""The agent console's server side end to end: a real HTTP server, the agent WebSocket,
the queue runtime in Redis and the LiveKit stand-in.

An agent logs in and goes available; a caller joins the queue; the offer arrives on the
socket with the caller's number and waiting time; accepting creates the call's room and
returns a token for that room only; when the call ends the room is deleted and the agent
goes through wrap-up back to available.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from api_support import LK_KEY, LK_SECRET, PASSWORDS, api_app, serving

from appserver.agents.sip import room_name
from appserver.queues import config as queue_config
from appserver.store.members import QueueMember, save_member
from appserver.store.queues import Queue, save_queue
from livekit import api as lkapi


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            event = json.loads((await ws.receive()).data)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event


async def test_offer_accept_room_and_wrapup(pg_pool, redis_client) -> None:
    await save_queue(pg_pool, Queue(name="support", wrapup_seconds=1, ring_timeout=30))
    async with api_app(pg_pool, redis_client) as api, serving(api) as base:
        await save_member(pg_pool, QueueMember("support", "agent1"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for 127.0.0.1
        async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
            r = await http.post("/api/auth/login",
                                json={"username": "agent1", "password": PASSWORDS["agent1"]})
            assert r.status == 200
            page = await http.get("/console")
            assert page.status == 200 and "login-form" in await page.text()
            async with http.ws_connect("/ws/agent") as ws:
                hello = await _next(ws, "hello")
                assert hello["status"]["state"] == "logged_out"
                assert (await (await http.post("/api/agent/login")).json())["state"] == \
                    "available"
                await _next(ws, "state", state="available")

                await api.ctx.queues.enqueue("support", "call-42", "worker-1", caller="+15550123")
                await api.ctx.queues.match("support")
                offer = await _next(ws, "offer", call="call-42")
                assert offer["caller"] == "+15550123" and offer["queue"] == "support"
                assert offer["waiting_seconds"] >= 0 and offer["joined_ms"] > 0

                r = await http.post("/api/agent/accept", json={"call": "call-42"})
                accepted = await r.json()
                assert accepted["ok"] is True
                grant = accepted["livekit"]
                assert grant["room"] == room_name("call-42") == "call-call-42"
                assert room_name("call-42") in api.livekit.rooms
                claims = lkapi.TokenVerifier(LK_KEY, LK_SECRET).verify(grant["token"])
                assert claims.identity == "agent-agent1"
                assert claims.video.room == "call-call-42" and claims.video.room_join
                assert not claims.video.room_create and not claims.video.room_admin
                assert not claims.video.room_list
                await _next(ws, "state", state="on_call")
                # The worker is told to connect the caller.
                inbox = await api.ctx.queues.pop_inbox("worker-1", 1)
                assert inbox is not None and inbox["type"] == "assigned"

                # The caller hangs up: the worker finishes the call.
                await api.ctx.queues.finish("call-42")
                wrap = await _next(ws, "state", state="wrap_up")
                assert wrap["room_closed"] == "call-call-42"
                assert "call-call-42" not in api.livekit.rooms
                await asyncio.sleep(1.1)
                await api.ctx.queues.match("support")  # the workers' periodic matching
                await _next(ws, "state", state="available")
                r = await http.get("/api/agent/status")
                assert (await r.json())["state"] == "available"


async def test_console_actions_and_refusals(pg_pool, redis_client) -> None:
    await save_queue(pg_pool, Queue(name="support", wrapup_seconds=0))
    async with api_app(pg_pool, redis_client) as api:
        await save_member(pg_pool, QueueMember("support", "agent1"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        async with api.client(await api.token("agent1")) as c:
            assert (await c.post("/api/agent/available")).status_code == 409  # logged out
            assert (await c.post("/api/agent/login")).json()["state"] == "available"
            r = await c.post("/api/agent/break", json={"reason": "lunch"})
            assert r.json()["state"] == "break"
            status = (await c.get("/api/agent/status")).json()
            assert status["state"] == "break" and status["reason"] == "lunch"
            assert (await c.post("/api/agent/break", json={"reason": "x" * 51})).status_code \
                == 422
            r = await c.post("/api/agent/accept", json={"call": "nope"})
            assert r.json() == {"ok": False, "error": "not_offered", "queue": "",
                                "livekit": None}
            assert (await c.post("/api/agent/accept", json={"call": "a b"})).status_code == 422
            assert (await c.get("/api/agent/token")).status_code == 404
            assert (await c.get("/api/agent/history")).json() == []
            r = await c.post("/api/agent/hangup")
            assert r.json()["state"] == "break"


async def test_websocket_refuses_strangers(pg_pool, redis_client) -> None:
    async with (
        api_app(pg_pool, redis_client) as api,
        serving(api) as base,
        aiohttp.ClientSession(base_url=base) as http,
    ):
        async with http.ws_connect("/ws/agent") as ws:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401
        token = await api.token("agent1")
        async with http.ws_connect("/ws/agent", headers={
            "Authorization": f"Bearer {token}", "Origin": "http://evil.example"}) as ws:
            await ws.receive()
            assert ws.close_code == 4403
        async with http.ws_connect("/ws/agent", headers={
                "Authorization": f"Bearer {api.admin_key}"}) as ws:
            await ws.receive()
            assert ws.close_code == 4403


async def test_hold_and_blind_transfer_reach_the_owning_worker(pg_pool, redis_client) -> None:
    await save_queue(pg_pool, Queue(name="support", wrapup_seconds=0))
    await save_queue(pg_pool, Queue(name="billing"))
    async with api_app(pg_pool, redis_client) as api, serving(api) as base:
        await save_member(pg_pool, QueueMember("support", "agent1"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        token = await api.token("agent1")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(base_url=base, headers=headers) as http, \
                http.ws_connect("/ws/agent") as ws:
            await _next(ws, "hello")
            r = await http.post("/api/agent/hold")
            assert r.status == 409 and (await r.json())["detail"]["code"] == "not_on_call"
            await http.post("/api/agent/login")
            await api.ctx.queues.enqueue("support", "call-7", "worker-1", caller="+15550123")
            await api.ctx.queues.match("support")
            await _next(ws, "offer", call="call-7")
            assert (await (await http.post("/api/agent/accept", json={"call": "call-7"})).json())[
                "ok"]
            assert (await api.ctx.queues.pop_inbox("worker-1", 1) or {})["type"] == "assigned"

            r = await http.post("/api/agent/hold")
            assert r.status == 202 and await r.json() == {"call": "call-7", "held": True,
                                                          "transfer": ""}
            assert (await _next(ws, "hold", call="call-7"))["held"] is True
            assert await api.ctx.queues.pop_inbox("worker-1", 1) == {
                "type": "agent_request", "call": "call-7", "action": "hold", "target": ""}
            assert (await (await http.get("/api/agent/status")).json())["held"] is True
            async with api.client(await api.token("super1")) as supervisor:
                live = (await supervisor.get("/api/calls")).json()
                assert [(c["call_id"], c["agent"], c["held"]) for c in live] == \
                    [("call-7", "agent1", True)]
            assert (await http.post("/api/agent/unhold")).status == 202
            assert (await _next(ws, "hold", call="call-7"))["held"] is False
            assert (await api.ctx.queues.pop_inbox("worker-1", 1) or {})["action"] == "unhold"
            assert sorted(await (await http.get("/api/agent/queues")).json()) == \
                ["billing", "support"]

            for body, status in (({"kind": "menu", "target": "main"}, 422),
                                 ({"kind": "extension", "target": "12 3"}, 422),
                                 ({"kind": "extension", "target": "12a"}, 422),
                                 ({"kind": "queue", "target": "nope"}, 404),
                                 ({"kind": "queue"}, 422)):
                r = await http.post("/api/agent/transfer", json=body)
                assert r.status == status, (body, r.status, await r.text())
            assert await api.ctx.queues.pop_inbox("worker-1", 0.1) is None  # nothing sent

            r = await http.post("/api/agent/transfer", json={"kind": "queue", "target": "billing"})
            assert r.status == 202 and (await r.json())["transfer"] == "queue:billing"
            assert (await _next(ws, "transfer", call="call-7"))["target"] == "queue:billing"
            assert await api.ctx.queues.pop_inbox("worker-1", 1) == {
                "type": "agent_request", "call": "call-7", "action": "transfer",
                "target": "queue:billing"}
            r = await http.post("/api/agent/transfer", json={"kind": "extension", "target": "1"})
            assert r.status == 409 and (await r.json())["detail"]["code"] == "transferring"



async def _offered(api: Any, c: Any) -> None:
    """agent1 in support (30 s wrap-up) is offered call-1, owned by worker-1."""
    await save_member(api.ctx.pool, QueueMember("support", "agent1"))
    await queue_config.reload(api.ctx.pool, api.ctx.queues)
    await c.post("/api/agent/login")
    await api.ctx.queues.enqueue("support", "call-1", "worker-1", caller="+15550123")
    await api.ctx.queues.match("support")


async def test_agent_hangup_while_livekit_is_down_ends_the_call(pg_pool, redis_client) -> None:
    """Reproduces: with LiveKit down, POST /api/agent/hangup answered 500
    (ClientConnectorError) because deleting the room failed, and the call did not end. Now
    the call ends anyway (wrap-up; the worker that owns it is told to end the agent's leg)
    and the room is deleted once LiveKit is back, from a Redis set of rooms to delete that
    any API process works through."""
    from appserver.agents.rooms import ROOMS_TO_DELETE

    await save_queue(pg_pool, Queue(name="support", wrapup_seconds=30))
    async with api_app(pg_pool, redis_client) as api, \
            api.client(await api.token("agent1")) as c:
        await _offered(api, c)
        r = await c.post("/api/agent/accept", json={"call": "call-1"})
        assert r.status_code == 200 and r.json()["ok"], r.text
        assert (await api.ctx.queues.pop_inbox("worker-1", 1) or {})["type"] == "assigned"
        await api.livekit.stop()
        r = await c.post("/api/agent/hangup")
        assert r.status_code == 200, r.text
        assert r.json() == {"state": "wrap_up", "room_closed": "call-call-1"}
        assert await api.ctx.queues.pop_inbox("worker-1", 1) == {
            "type": "agent_request", "call": "call-1", "action": "hangup", "target": ""}
        assert "call-call-1" in api.livekit.rooms  # LiveKit could not be told yet
        assert await redis_client.zrange(ROOMS_TO_DELETE, 0, -1) == ["call-call-1"]

        await api.livekit.start()
        async with asyncio.timeout(10):
            while "call-call-1" in api.livekit.rooms:
                await asyncio.sleep(0.1)
        assert await redis_client.zcard(ROOMS_TO_DELETE) == 0
        status = (await c.get("/api/agent/status")).json()
        assert (status["state"], status["room"]) == ("wrap_up", None)


async def test_accept_while_livekit_is_down_answers_503_and_the_offer_stands(
    pg_pool, redis_client
) -> None:
    """Accepting while LiveKit cannot be reached took the call into a room that could not
    exist. Now it answers a clear 503 (livekit_unavailable, Retry-After), nobody is dialled,
    the offer still stands, and accepting once LiveKit is back works."""
    await save_queue(pg_pool, Queue(name="support", ring_timeout=60))
    async with api_app(pg_pool, redis_client) as api, \
            api.client(await api.token("agent1")) as c:
        await _offered(api, c)
        await api.livekit.stop()
        r = await c.post("/api/agent/accept", json={"call": "call-1"})
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert r.json()["detail"]["code"] == "livekit_unavailable"
        status = (await c.get("/api/agent/status")).json()
        assert (status["state"], status["offer"], status["room"]) == ("offered", "call-1", None)
        assert await api.ctx.queues.pop_inbox("worker-1", 0.1) is None  # nobody dialled
        await api.livekit.start()
        r = await c.post("/api/agent/accept", json={"call": "call-1"})
        assert r.status_code == 200 and r.json()["livekit"]["room"] == "call-call-1", r.text
        assert "call-call-1" in api.livekit.rooms
