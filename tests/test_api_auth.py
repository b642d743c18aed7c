"""Authentication and roles: every route is closed unless deliberately public."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from api_support import PASSWORDS, api_app
from fastapi.routing import APIRoute, APIWebSocketRoute

from appserver.api.auth import issue_session

PUBLIC = {
    "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
    "/openapi.json", "/api/auth/login", "/console", "/softphone",
}
RANK = {"agent": 1, "supervisor": 2, "admin": 3}


def _required_role(route: APIRoute) -> str | None:
    roles = [getattr(d.call, "required_role", None) for d in route.dependant.dependencies]
    found = [r for r in roles if r]
    return found[0] if found else None


def all_routes(routes: list[Any]) -> list[Any]:
    """Routes including those of included routers (FastAPI keeps those nested)."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(all_routes(inner.routes) if inner is not None else [route])
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_every_route_rejects_anonymous_and_lower_roles(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        tokens = {name: await api.token(name) for name in ("agent1", "super1")}
        checked = 0
        for route in all_routes(api.app.routes):
            if isinstance(route, APIWebSocketRoute) or not isinstance(route, APIRoute):
                continue
            if route.path in PUBLIC or route.path.startswith("/sim"):
                continue
            role = _required_role(route)
            assert role is not None, f"{route.path} has no role check"
            for method in route.methods - {"HEAD", "OPTIONS"}:
                url = _concrete(route.path)
                async with api.client() as anon:
                    r = await anon.request(method, url, json={})
                    assert r.status_code == 401, (method, url, r.status_code)
                async with api.client("not-a-token") as bad:
                    assert (await bad.request(method, url, json={})).status_code == 401
                for name, user_role in (("agent1", "agent"), ("super1", "supervisor")):
                    if RANK[user_role] < RANK[role]:
                        async with api.client(tokens[name]) as c:
                            r = await c.request(method, url, json={})
                            assert r.status_code == 403, (method, url, name, r.status_code)
                checked += 1
        assert checked >= 40


async def test_websocket_route_needs_a_session(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        paths = [r.path for r in all_routes(api.app.routes)
                 if isinstance(r, APIWebSocketRoute)]
        assert paths == ["/ws/agent"]


async def test_login_cookie_bearer_and_logout(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client() as c:
        r = await c.post("/api/auth/login",
                         json={"username": "super1", "password": PASSWORDS["super1"]})
        assert r.status_code == 200
        assert r.json()["role"] == "supervisor"
        assert "httponly" in r.headers["set-cookie"].lower()
        me = await c.get("/api/auth/me")  # the cookie alone authenticates
        assert me.json() == {"name": "super1", "role": "supervisor", "via": "session"}
        assert (await c.get("/api/menus")).status_code == 200
        assert (await c.put("/api/queues/q1", json={})).status_code == 403
        r = await c.post("/api/auth/logout")
        assert r.status_code == 204
        assert (await c.get("/api/auth/me")).status_code == 401


async def test_wrong_password_and_rate_limit(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client() as c:
        for _ in range(5):
            r = await c.post("/api/auth/login", json={"username": "agent1", "password": "nope"})
            assert r.status_code == 401
        r = await c.post("/api/auth/login",
                         json={"username": "agent1", "password": PASSWORDS["agent1"]})
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= 300
        # Another user from the same address is not blocked.
        r = await c.post("/api/auth/login",
                         json={"username": "super1", "password": PASSWORDS["super1"]})
        assert r.status_code == 200
        unknown = await c.post("/api/auth/login", json={"username": "ghost", "password": "x"})
        assert unknown.status_code == 401


async def test_disabled_agent_and_role_change_apply_at_once(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        token = await api.token("super1")
        async with api.client(token) as c:
            assert (await c.get("/api/agents")).status_code == 200
            await pg_pool.execute("UPDATE agents SET role = 'agent' WHERE username = 'super1'")
            assert (await c.get("/api/agents")).status_code == 403
            await pg_pool.execute("UPDATE agents SET enabled = false WHERE username = 'super1'")
            assert (await c.get("/api/auth/me")).status_code == 401
        async with api.client() as c:
            r = await c.post("/api/auth/login",
                             json={"username": "super1", "password": PASSWORDS["super1"]})
            assert r.status_code == 401


async def test_expired_and_forged_tokens(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        old = issue_session(api.ctx.secret, "admin1", 60, now=time.time() - 120)
        async with api.client(old) as c:
            r = await c.get("/api/auth/me")
            assert r.status_code == 401 and "expired" in r.json()["detail"]
        forged = issue_session("x" * 40, "admin1", 60)
        async with api.client(forged) as c:
            assert (await c.get("/api/auth/me")).status_code == 401


async def test_api_keys_create_use_revoke(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        async with api.client(api.admin_key) as c:
            me = (await c.get("/api/auth/me")).json()
            assert me == {"name": "key:automation", "role": "admin", "via": "api_key"}
            r = await c.post("/api/keys", json={"name": "ci", "role": "supervisor"})
            assert r.status_code == 201
            ci_key = r.json()["key"]
        async with api.client(ci_key) as ci:
            assert (await ci.get("/api/queues")).status_code == 200
            assert (await ci.put("/api/queues/q1", json={})).status_code == 403
            # API keys are not agents: console actions refuse them.
            assert (await ci.post("/api/agent/available")).status_code == 403
        async with api.client(api.admin_key) as c:
            assert (await c.delete("/api/keys/ci")).status_code == 204
            names = [k["name"] for k in (await c.get("/api/keys")).json()]
            assert names == ["automation", "ci"]
        async with api.client(ci_key) as ci:
            assert (await ci.get("/api/queues")).status_code == 401
        tampered = api.admin_key[:-2] + ("AA" if not api.admin_key.endswith("AA") else "BB")
        async with api.client(tampered) as c:
            assert (await c.get("/api/auth/me")).status_code == 401


@pytest.mark.parametrize("body", [{}, {"username": "a" * 64, "password": "x"},
                                  {"username": "a", "password": ""}])
async def test_login_input_limits(pg_pool, redis_client, body) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client() as c:
        assert (await c.post("/api/auth/login", json=body)).status_code == 422
