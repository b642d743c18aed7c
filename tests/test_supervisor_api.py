"""The supervisors' API: the wallboard's data and socket (pushed from Redis events, the
same in every API process, "today" in the configured time zone) and the actions on agents
and callers, each refused to lower roles and recorded in the audit trail."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import httpx
import pytest
from api_support import api_app, serving

from appserver.api.app import create_app
from appserver.api.context import ApiContext
from appserver.api.wallboard import day_start_ms, today_figures
from appserver.queues import config as queue_config
from appserver.queues.model import QueueConfig
from appserver.store.members import QueueMember, save_member
from appserver.store.queues import Queue, save_queue


async def _queues(api: Any, pg_pool: Any) -> None:
    await save_queue(pg_pool, Queue(name="support", service_level_seconds=30))
    await save_queue(pg_pool, Queue(name="billing"))
    await save_member(pg_pool, QueueMember("support", "agent1"))
    await queue_config.reload(pg_pool, api.ctx.queues)


@contextlib.asynccontextmanager
async def another_process(api: Any) -> AsyncIterator[ApiContext]:
    """A second API process's services on the same PostgreSQL and Redis (UTC)."""
    ctx = await ApiContext.start(api.ctx.pool, api.ctx.redis,
                                 api.ctx.settings.model_copy(update={"wallboard_timezone": "UTC"}))
    try:
        yield ctx
    finally:
        await ctx.stop()


async def _audit(api: Any, **query: Any) -> list[dict[str, Any]]:
    async with api.client(api.admin_key) as c:
        r = await c.get("/api/audit", params=query)
        assert r.status_code == 200, r.text
        return list(r.json())


def test_today_starts_at_midnight_in_the_configured_time_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 2026-03-29 10:00 in Paris (summer time began at 02:00 that night): midnight was CET.
    now = int(datetime(2026, 3, 29, 8, 0, tzinfo=UTC).timestamp() * 1000)
    assert day_start_ms(now, paris) == int(datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
                                           .timestamp() * 1000)
    assert day_start_ms(now, ZoneInfo("UTC")) == int(datetime(2026, 3, 29, tzinfo=UTC)
                                                     .timestamp() * 1000)
    assert today_figures({"answered": 3, "answered_in_sl": 2, "abandoned": 1,
                          "wait_ms": 9000, "handle_ms": 300_000})["service_level"] == 50.0
    assert today_figures({})["service_level"] is None


async def test_wallboard_socket_needs_a_supervisor(pg_pool, redis_client) -> None:
    async with (api_app(pg_pool, redis_client) as api, serving(api) as base,
                aiohttp.ClientSession(base_url=base) as http):
        async with http.ws_connect("/ws/wallboard") as ws:
            await ws.receive()
            assert ws.close_code == 4401
        for name, code in (("agent1", 4403), ("super1", None), ("admin1", None)):
            headers = {"Authorization": f"Bearer {await api.token(name)}"}
            async with http.ws_connect("/ws/wallboard", headers=headers) as ws:
                msg = await ws.receive()
                if code is None:
                    assert json.loads(msg.data)["type"] == "hello"
                else:
                    assert ws.close_code == code
        async with http.ws_connect("/ws/wallboard", headers={
                "Origin": "http://evil.example",
                "Authorization": f"Bearer {await api.token('super1')}"}) as ws:
            await ws.receive()
            assert ws.close_code == 4403


async def test_the_wallboard_follows_events_from_any_process_within_a_second(
        pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client, wallboard_timezone="Europe/Paris") as api, \
            another_process(api) as other, serving(api) as base, \
            aiohttp.ClientSession(base_url=base) as http:
        await _queues(api, pg_pool)
        headers = {"Authorization": f"Bearer {await api.token('super1')}"}
        async with http.ws_connect("/ws/wallboard", headers=headers) as ws:
            hello = json.loads((await ws.receive()).data)
            assert hello["timezone"] == "Europe/Paris" and "series" in hello

            async def next_where(check: Any) -> tuple[dict[str, Any], float]:
                started = time.monotonic()
                while True:
                    snap = json.loads((await ws.receive(timeout=3)).data)
                    if check(snap):
                        return snap, time.monotonic() - started

            def queue(snap: dict[str, Any], name: str = "support") -> dict[str, Any]:
                return next(q for q in snap["queues"] if q["name"] == name)

            def agent1(snap: dict[str, Any]) -> dict[str, Any]:
                return next(a for a in snap["agents"] if a["username"] == "agent1")

            # Another process (here: another API's store, as a worker would) queues a caller.
            await other.queues.enqueue("support", "c1", "w1", caller="+15550100")
            snap, delay = await next_where(lambda s: queue(s)["waiting"] == 1)
            assert delay < 1.0
            assert snap["calls"][0]["caller"] == "+15550100"
            await other.control.login("agent1")
            assert (await other.control.accept("agent1", "c1")).ok
            snap, delay = await next_where(lambda s: agent1(s)["state"] == "on_call")
            assert delay < 1.0
            assert (agent1(snap)["caller"], agent1(snap)["queue"]) == ("+15550100", "support")
            assert [a["username"] for a in snap["agents"]] == ["agent1"]  # in a queue
            await other.queues.finish("c1")
            snap, delay = await next_where(lambda s: queue(s)["today"]["answered"] == 1)
            assert delay < 1.0
            assert agent1(snap)["calls_today"] == 1
            assert queue(snap)["today"]["service_level"] == 100.0
            assert queue(snap)["service_level_seconds"] == 30
            await other.queues.enqueue("support", "c2", "w1")
            await other.queues.leave("c2", "abandoned")
            snap, _ = await next_where(lambda s: queue(s)["today"]["abandoned"] == 1)
            assert queue(snap)["today"]["service_level"] == 50.0
        # Any API process, or one started later, reads the same day from Redis.
        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(context=other)),
                base_url="http://other", headers={
                    "Authorization": f"Bearer {await api.token('super1')}"}) as c:
            board = (await c.get("/api/wallboard")).json()
        assert queue(board)["today"] == queue(snap)["today"]
        assert agent1(board)["calls_today"] == 1


async def test_the_last_hour_is_sampled_into_redis(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        await _queues(api, pg_pool)
        await api.ctx.queues.enqueue("support", "c1", "w1")
        await api.ctx.wallboard.take_sample()
        async with api.client(await api.token("super1")) as c:
            series = (await c.get("/api/wallboard")).json()["series"]
        assert [p[1:] for p in series["support"]][-1] == [1, None]
        assert series["billing"][-1][1] == 0


async def test_the_wallboard_shows_callbacks_waiting_and_their_entries(pg_pool,
                                                                      redis_client) -> None:
    """A caller who asked to be called back has hung up: the queue shows a callback waiting
    (not a caller waiting) with its estimate, and the callers list the entry as a callback."""
    async with api_app(pg_pool, redis_client) as api:
        await save_queue(pg_pool, Queue(name="support", callback_key="5"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        store = api.ctx.queues
        await store.enqueue("support", "c1", "w1", caller="5550100")
        await store.enqueue("support", "c2", "w1", caller="5550200")
        assert await store.request_callback("c1", "5550100") == 1
        async with api.client(await api.token("super1")) as c:
            board = (await c.get("/api/wallboard")).json()
        support = next(q for q in board["queues"] if q["name"] == "support")
        assert (support["waiting"], support["callbacks_waiting"]) == (1, 1)
        assert support["callbacks_dialing"] == 0 and support["callback_estimate"] >= 0
        by_id = {call["call_id"]: call for call in board["calls"]}
        assert by_id["c1"]["callback"] == "5550100" and by_id["c2"]["callback"] is None


async def test_supervisor_sets_agent_states_and_each_is_audited(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        await _queues(api, pg_pool)
        async with api.client(await api.token("super1")) as c:
            url = "/api/supervisor/agents/agent1/state"
            r = await c.post(url, json={"state": "available"})  # logged out: logs in
            assert r.status_code == 200 and r.json() == {"state": "available"}
            assert (await c.post(url, json={"state": "break", "reason": "coaching"})).json() \
                == {"state": "break"}
            assert (await c.post(url, json={"state": "logged_out"})).json() == \
                {"state": "logged_out"}
            assert (await c.post(url, json={"state": "asleep"})).status_code == 422
            r = await c.post("/api/supervisor/agents/nobody/state", json={"state": "break"})
            assert r.status_code == 404
            # On a call: a break waits for its end; a logout is refused.
            await c.post(url, json={"state": "available"})
            await api.ctx.queues.enqueue("support", "c1", "w1")
            await api.ctx.queues.match("support")
            assert (await api.ctx.control.accept("agent1", "c1")).ok
            assert (await c.post(url, json={"state": "logged_out"})).status_code == 409
            assert (await c.post(url, json={"state": "break"})).json() == \
                {"state": "pending:break"}
        entries = await _audit(api, resource="agent_state", name="agent1")
        assert [(e["actor"], e["via"], e["action"], e["before"], e["after"])
                for e in reversed(entries)][:3] == [
            ("super1", "session", "update", {"state": "logged_out", "reason": ""},
             {"state": "available", "reason": ""}),
            ("super1", "session", "update", {"state": "available", "reason": ""},
             {"state": "break", "reason": "coaching"}),
            ("super1", "session", "update", {"state": "break", "reason": "coaching"},
             {"state": "logged_out", "reason": ""})]
        assert entries[0]["client"]


async def test_supervisor_moves_raises_and_hangs_up_callers(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        await _queues(api, pg_pool)
        store = api.ctx.queues
        await store.enqueue("support", "c1", "w1", caller="+15550100")
        await store.enqueue("billing", "c2", "w1")
        async with api.client(api.admin_key) as c:
            r = await c.post("/api/supervisor/calls/c1/move", json={"queue": "billing"})
            assert r.status_code == 200, r.text
            assert r.json() == {"call": "c1", "queue": "billing", "priority": 0}
            r = await c.post("/api/supervisor/calls/c1/move", json={"priority": 5})
            assert r.json()["priority"] == 5
            assert [x.call_id for x in await store.queue_calls("billing")] == ["c1", "c2"]
            assert (await c.post("/api/supervisor/calls/c1/move", json={})).status_code == 422
            r = await c.post("/api/supervisor/calls/c1/move", json={"priority": 100})
            assert r.status_code == 422
            r = await c.post("/api/supervisor/calls/c1/move", json={"queue": "nope"})
            assert (r.status_code, r.json()["detail"]["code"]) == (404, "no_such_queue")
            r = await c.post("/api/supervisor/calls/zz/move", json={"queue": "billing"})
            assert (r.status_code, r.json()["detail"]["code"]) == (404, "no_entry")
            r = await c.post("/api/supervisor/calls/c2/hangup")
            assert r.status_code == 202 and r.json() == {"call": "c2", "result": "sent"}
            assert json.loads(await redis_client.lpop("{callyard:q}:worker:w1:inbox")) == \
                {"type": "moved", "call": "c1", "queue": "billing", "priority": 0}
        moves = await _audit(api, resource="queued_call", name="c1")
        assert [(e["actor"], e["via"], e["before"], e["after"]) for e in reversed(moves)] == [
            ("key:automation", "api_key", {"queue": "support", "priority": 0},
             {"queue": "billing", "priority": 0}),
            ("key:automation", "api_key", {"queue": "billing", "priority": 0},
             {"queue": "billing", "priority": 5})]
        hangups = await _audit(api, resource="call", name="c2")
        assert hangups[0]["action"] == "delete"
        assert hangups[0]["before"] == {"queue": "billing", "state": "waiting", "caller": "",
                                        "agent": ""}


@pytest.mark.parametrize("path", ["/api/supervisor/calls/c1/hangup",
                                  "/api/supervisor/calls/c1/move",
                                  "/api/supervisor/agents/agent1/state", "/api/wallboard"])
async def test_agents_cannot_use_supervisor_routes(pg_pool, redis_client, path) -> None:
    async with api_app(pg_pool, redis_client) as api:
        await api.ctx.queues.sync_queue(QueueConfig("support"), [])
        await api.ctx.queues.enqueue("support", "c1", "w1")
        async with api.client(await api.token("agent1")) as c:
            method = "GET" if path == "/api/wallboard" else "POST"
            r = await c.request(method, path, json={"state": "break", "priority": 9})
            assert r.status_code == 403
        assert (await api.ctx.queues.queued_call("c1")).priority == 0  # type: ignore[union-attr]
