"""Helpers for the API, console and LiveKit tests: an app wired to the test database and
Redis, logged-in clients, and a stand-in for LiveKit's Twirp API.

The stand-in decodes each request with livekit-protocol's message types and checks the
caller's token with the API secret, like the real server; it keeps rooms in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from aiohttp import web
from fastapi import FastAPI
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto_sip

from appserver.api.app import create_app
from appserver.api.auth import create_api_key, hash_password
from appserver.api.command import http_server
from appserver.api.context import ApiContext
from appserver.settings import load_settings
from appserver.store.agents import Agent, save_agent
from livekit import api

LK_KEY = "test-key"
LK_SECRET = "test-secret-0123456789abcdef0123456789"
API_SECRET = "test-session-secret-0123456789abcdef0123456789"
PASSWORDS = {"admin1": "admin-pass-1", "super1": "super-pass-1", "agent1": "agent-pass-1"}


@dataclass
class LiveKitStandIn:
    """Rooms and SIP objects as the Twirp API saw them; ``calls`` logs (method, request)."""

    rooms: dict[str, proto_models.Room] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    trunks: dict[str, proto_sip.SIPInboundTrunkInfo] = field(default_factory=dict)
    rules: dict[str, proto_sip.SIPDispatchRuleInfo] = field(default_factory=dict)
    url: str = ""
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Serve the API (again on the same port after :meth:`stop`)."""
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """LiveKit down: connections are refused until :meth:`start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        try:
            claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(auth.removeprefix("Bearer "))
        except Exception:
            return web.json_response({"code": "unauthenticated", "msg": "bad token"}, status=401)
        if request.content_type != "application/protobuf":
            return web.json_response({"code": "malformed", "msg": "protobuf only"}, status=400)
        body = await request.read()
        method = request.match_info["method"]
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return web.json_response({"code": "bad_route", "msg": method}, status=404)
        if request.match_info["service"] == "RoomService" and not claims.video.room_create:
            return web.json_response({"code": "permission_denied", "msg": "roomCreate"}, 403)
        if request.match_info["service"] == "SIP" and not (claims.sip and claims.sip.admin):
            return web.json_response({"code": "permission_denied", "msg": "sip admin"}, 403)
        result = handler(body)
        if isinstance(result, web.Response):
            return result
        return web.Response(body=result.SerializeToString(), content_type="application/protobuf")

    def _CreateRoom(self, body: bytes) -> Any:
        req = proto_room.CreateRoomRequest.FromString(body)
        self.calls.append(("CreateRoom", req))
        room = self.rooms.get(req.name) or proto_models.Room(
            sid=f"RM_{len(self.rooms)}", name=req.name, empty_timeout=req.empty_timeout,
            max_participants=req.max_participants, metadata=req.metadata)
        self.rooms[req.name] = room
        return room

    def _DeleteRoom(self, body: bytes) -> Any:
        req = proto_room.DeleteRoomRequest.FromString(body)
        self.calls.append(("DeleteRoom", req))
        if self.rooms.pop(req.room, None) is None:
            return web.json_response({"code": "not_found", "msg": "room not found"}, status=404)
        return proto_room.DeleteRoomResponse()

    def _ListSIPInboundTrunk(self, body: bytes) -> Any:
        req = proto_sip.ListSIPInboundTrunkRequest.FromString(body)
        self.calls.append(("ListSIPInboundTrunk", req))
        return proto_sip.ListSIPInboundTrunkResponse(items=list(self.trunks.values()))

    def _CreateSIPInboundTrunk(self, body: bytes) -> Any:
        req = proto_sip.CreateSIPInboundTrunkRequest.FromString(body)
        self.calls.append(("CreateSIPInboundTrunk", req))
        info = proto_sip.SIPInboundTrunkInfo()
        info.CopyFrom(req.trunk)
        info.sip_trunk_id = f"ST_{len(self.trunks) + 1}"
        self.trunks[info.sip_trunk_id] = info
        return info

    def _DeleteSIPTrunk(self, body: bytes) -> Any:
        req = proto_sip.DeleteSIPTrunkRequest.FromString(body)
        self.calls.append(("DeleteSIPTrunk", req))
        info = self.trunks.pop(req.sip_trunk_id)
        return proto_sip.SIPTrunkInfo(sip_trunk_id=info.sip_trunk_id)

    def _ListSIPDispatchRule(self, body: bytes) -> Any:
        req = proto_sip.ListSIPDispatchRuleRequest.FromString(body)
        self.calls.append(("ListSIPDispatchRule", req))
        return proto_sip.ListSIPDispatchRuleResponse(items=list(self.rules.values()))

    def _CreateSIPDispatchRule(self, body: bytes) -> Any:
        req = proto_sip.CreateSIPDispatchRuleRequest.FromString(body)
        self.calls.append(("CreateSIPDispatchRule", req))
        info = proto_sip.SIPDispatchRuleInfo()
        info.CopyFrom(req.dispatch_rule)
        info.sip_dispatch_rule_id = f"SDR_{len(self.rules) + 1}"
        self.rules[info.sip_dispatch_rule_id] = info
        return info

    def _DeleteSIPDispatchRule(self, body: bytes) -> Any:
        req = proto_sip.DeleteSIPDispatchRuleRequest.FromString(body)
        self.calls.append(("DeleteSIPDispatchRule", req))
        return self.rules.pop(req.sip_dispatch_rule_id)


@contextlib.asynccontextmanager
async def livekit_stand_in() -> AsyncIterator[LiveKitStandIn]:
    lk = LiveKitStandIn()
    await lk.start()
    try:
        yield lk
    finally:
        await lk.stop()


async def seed_people(pool: asyncpg.Pool) -> None:
    """admin1 (admin), super1 (supervisor), agent1 (agent), each with a password."""
    for name, role in (("admin1", "admin"), ("super1", "supervisor"), ("agent1", "agent")):
        await save_agent(pool, Agent(username=name, display_name=name.title(), role=role,
                                     password_hash=await hash_password(PASSWORDS[name])))


@dataclass
class Api:
    app: FastAPI
    ctx: ApiContext
    livekit: LiveKitStandIn
    admin_key: str

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://testserver", headers=headers)

    async def token(self, username: str) -> str:
        async with self.client() as c:
            r = await c.post("/api/auth/login",
                             json={"username": username, "password": PASSWORDS[username]})
            assert r.status_code == 200, r.text
            return str(r.json()["token"])


@contextlib.asynccontextmanager
async def api_app(pool: asyncpg.Pool, redis: aioredis.Redis, **settings: Any) -> AsyncIterator[Api]:
    await seed_people(pool)
    _, key = await create_api_key(pool, "automation")
    async with livekit_stand_in() as lk:
        cfg = load_settings(**{"livekit_url": lk.url, "livekit_api_key": LK_KEY,
                               "livekit_api_secret": LK_SECRET, "api_secret": API_SECRET,
                               **settings})
        ctx = await ApiContext.start(pool, redis, cfg)
        try:
            yield Api(create_app(context=ctx, readiness=None), ctx, lk, key)
        finally:
            await ctx.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(api: Api) -> AsyncIterator[str]:
    port = _free_port()
    server = http_server(api.app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
