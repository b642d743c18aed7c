"""Listen, whisper, barge over the HTTP API: supervisors and admins only, a room and a token
of the supervisor's own, the request in the inbox of the worker owning the call, the agent's
console told while it lasts, and every action in the audit log."""

from __future__ import annotations

import aiohttp
from api_support import LK_KEY, LK_SECRET, api_app, serving
from test_console_flow import _next

from appserver.agents.sip import supervisor_room
from appserver.queues import config as queue_config
from appserver.store.members import QueueMember, save_member
from appserver.store.queues import Queue, save_queue
from livekit import api as lkapi

URL = "/api/calls/call-7/supervise"


async def test_supervise_listen_whisper_barge_stop(pg_pool, redis_client) -> None:
    await save_queue(pg_pool, Queue(name="support", wrapup_seconds=0))
    async with api_app(pg_pool, redis_client) as api, serving(api) as base:
        await save_member(pg_pool, QueueMember("support", "agent1"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        queues = api.ctx.queues
        headers = {"Authorization": f"Bearer {await api.token('agent1')}"}
        async with aiohttp.ClientSession(base_url=base, headers=headers) as http, \
                http.ws_connect("/ws/agent") as ws, \
                api.client(await api.token("super1")) as sup, \
                api.client(await api.token("admin1")) as admin, \
                api.client(await api.token("agent1")) as agent, \
                api.client(api.admin_key) as key:
            await _next(ws, "hello")
            await http.post("/api/agent/login")
            await queues.enqueue("support", "call-7", "worker-1", caller="+15550123")
            await queues.match("support")
            await _next(ws, "offer", call="call-7")
            r = await sup.post(URL, json={"mode": "listen"})  # still ringing the agent
            assert r.status_code == 409 and r.json()["detail"]["code"] == "not_connected"
            assert (await http.post("/api/agent/accept", json={"call": "call-7"})).status == 200
            assert (await queues.pop_inbox("worker-1", 1) or {})["type"] == "assigned"

            # agents and API keys may not listen; bad modes are refused; nothing was sent
            assert (await agent.post(URL, json={"mode": "listen"})).status_code == 403
            assert (await agent.patch(URL, json={"mode": "barge"})).status_code == 403
            assert (await agent.delete(URL)).status_code == 403
            assert (await key.post(URL, json={"mode": "listen"})).status_code == 403
            assert (await sup.post(URL, json={"mode": "shout"})).status_code == 422
            assert (await sup.post("/api/calls/a b/supervise",
                                   json={"mode": "listen"})).status_code == 422
            assert await queues.pop_inbox("worker-1", 0.1) is None

            r = await sup.post(URL, json={"mode": "listen"})
            assert r.status_code == 200, r.text
            out = r.json()
            assert (out["call"], out["agent"], out["mode"]) == ("call-7", "agent1", "listen")
            room = supervisor_room("call-7")
            assert out["livekit"]["room"] == room and room in api.livekit.rooms
            claims = lkapi.TokenVerifier(LK_KEY, LK_SECRET).verify(out["livekit"]["token"])
            assert claims.identity == "supervisor-super1" and claims.video.room == room
            assert await queues.pop_inbox("worker-1", 1) == {
                "type": "supervise", "call": "call-7", "supervisor": "super1", "mode": "listen",
                "op": "start"}
            seen = await _next(ws, "supervise", call="call-7")
            assert (seen["supervisor"], seen["mode"]) == ("super1", "listen")
            status = await (await http.get("/api/agent/status")).json()
            assert status["supervision"] == {"supervisor": "super1", "mode": "listen"}

            # one supervisor at a time; only the one on the call changes or ends it
            r = await admin.post(URL, json={"mode": "barge"})
            assert r.status_code == 409 and r.json()["detail"]["code"] == "supervised"
            r = await admin.patch(URL, json={"mode": "barge"})
            assert r.status_code == 409 and r.json()["detail"]["code"] == "not_supervising"

            for mode in ("whisper", "barge"):
                r = await sup.patch(URL, json={"mode": mode})
                assert r.status_code == 200 and r.json()["mode"] == mode
                assert (await queues.pop_inbox("worker-1", 1) or {})["mode"] == mode
                assert (await _next(ws, "supervise", call="call-7"))["mode"] == mode

            r = await sup.delete(URL)
            assert r.status_code == 200 and r.json()["mode"] == "off"
            assert (await queues.pop_inbox("worker-1", 1) or {})["mode"] == "stop"
            assert (await _next(ws, "supervise", call="call-7"))["mode"] == "off"
            assert room not in api.livekit.rooms
            assert (await sup.delete(URL)).status_code == 409
            status = await (await http.get("/api/agent/status")).json()
            assert status["supervision"] is None
            # now the admin may
            assert (await admin.post(URL, json={"mode": "whisper"})).status_code == 200

            audit = (await admin.get("/api/audit", params={"resource": "supervision"})).json()
            trail = [(e["actor"], e["action"], e["name"], (e["after"] or {}).get("mode"))
                     for e in reversed(audit)]
            assert trail == [("super1", "create", "call-7", "listen"),
                             ("super1", "update", "call-7", "whisper"),
                             ("super1", "update", "call-7", "barge"),
                             ("super1", "delete", "call-7", None),
                             ("admin1", "create", "call-7", "whisper")]
            assert audit[1]["before"] == {"supervisor": "super1", "mode": "barge",
                                          "agent": "agent1"}
            assert all(e["client"] for e in audit)
