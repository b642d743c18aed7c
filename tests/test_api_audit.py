"""Finding 12: no record of who changed the configuration, and no HTTP access log.

Admin writes through the API land in ``audit_log`` (who, from where, when, before/after),
readable by admins at ``GET /api/audit``; hand edits in SQL are recorded by triggers as
``sql:<role>``; every request gets an access-log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from api_support import api_app

from appserver.api.audit import AUDITED


async def _audit(api: Any, **query: Any) -> list[dict[str, Any]]:
    async with api.client(api.admin_key) as c:
        r = await c.get("/api/audit", params=query)
        assert r.status_code == 200, r.text
        return list(r.json())


async def test_admin_writes_are_recorded_with_who_when_and_before_after(
    pg_pool, redis_client
) -> None:
    """Finding 12: an admin changed a queue and an agent's password; nothing said who."""
    async with api_app(pg_pool, redis_client) as api:
        token = await api.token("admin1")
        async with api.client(token) as c:
            for wait in (60, 90):
                r = await c.put("/api/queues/sales", json={"max_wait_seconds": wait})
                assert r.status_code == 200
            assert (await c.delete("/api/queues/sales")).status_code == 204
            r = await c.put("/api/agents/agent1", json={
                "display_name": "Agent One", "role": "agent", "password": "a-new-password"})
            assert r.status_code == 200
        async with api.client(api.admin_key) as c:
            assert (await c.post("/api/keys", json={"name": "ci"})).status_code == 201
            assert (await c.delete("/api/keys/ci")).status_code == 204

        entries = await _audit(api)
        assert [(e["actor"], e["action"], e["resource"], e["name"]) for e in entries] == [
            ("key:automation", "update", "api_key", "ci"),
            ("key:automation", "create", "api_key", "ci"),
            ("admin1", "update", "agent", "agent1"),
            ("admin1", "delete", "queue", "sales"),
            ("admin1", "update", "queue", "sales"),
            ("admin1", "create", "queue", "sales"),
        ]
        create, update, delete = entries[5], entries[4], entries[3]
        assert create["before"] is None and create["after"]["max_wait_seconds"] == 60
        assert update["before"]["max_wait_seconds"] == 60
        assert update["after"]["max_wait_seconds"] == 90
        assert delete["before"]["max_wait_seconds"] == 90 and delete["after"] is None
        assert "updated_at" not in update["after"] and "id" not in update["after"]
        assert {e["via"] for e in entries} == {"session", "api_key"}
        assert {e["client"] for e in entries} == {"127.0.0.1"}
        first = datetime.fromisoformat(create["at"])
        assert datetime.now(UTC) - first < timedelta(minutes=1)

        agent = entries[2]
        assert agent["before"]["display_name"] == "Agent1"
        assert agent["after"]["display_name"] == "Agent One"
        assert (agent["before"]["password"], agent["after"]["password"]) == ("set", "changed")
        revoked = entries[0]
        assert revoked["before"]["revoked_at"] is None and revoked["after"]["revoked_at"]
        stored = json.dumps(await pg_pool.fetch("SELECT before, after FROM audit_log"),
                            default=str)
        assert "argon2" not in stored and "secret_sha256" not in stored


async def test_menu_write_is_one_entry_with_its_options(pg_pool, redis_client) -> None:
    menu = {"greeting": ["tts:Hello"], "options": [{"digits": "1", "action": "hangup"}]}
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        assert (await c.put("/api/menus/main", json=menu)).status_code == 200
        menu["options"].append({"digits": "2", "action": "repeat"})
        assert (await c.put("/api/menus/main", json=menu)).status_code == 200
        entries = await _audit(api, resource="menu", name="main")
        assert [e["action"] for e in entries] == ["update", "create"]
        assert [o["digits"] for o in entries[0]["before"]["options"]] == ["1"]
        assert [o["digits"] for o in entries[0]["after"]["options"]] == ["1", "2"]


async def test_refused_failed_and_unchanged_writes_are_not_recorded(
    pg_pool, redis_client
) -> None:
    bad_menu = {"options": [{"digits": "1", "action": "submenu", "target": "missing"}]}
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        assert (await c.put("/api/menus/main", json=bad_menu)).status_code == 422
        assert (await c.delete("/api/queues/nothing")).status_code == 404
        assert (await c.put("/api/queues/q1", json={"bogus": 1})).status_code == 422
        assert (await c.put("/api/queues/q1", json={})).status_code == 200
        assert (await c.put("/api/queues/q1", json={})).status_code == 200  # no change
        async with api.client(await api.token("super1")) as sup:
            assert (await sup.put("/api/queues/q2", json={})).status_code == 403
            assert (await sup.get("/api/audit")).status_code == 403  # admins only
        entries = await _audit(api)
        assert [(e["action"], e["name"]) for e in entries] == [("create", "q1")]


async def test_audit_filters_and_paging(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        async with api.client(api.admin_key) as c:
            for name in ("a1", "a2", "a3"):
                assert (await c.put(f"/api/queues/{name}", json={})).status_code == 200
        async with api.client(await api.token("admin1")) as c:
            assert (await c.put("/api/schedules/office", json={"timezone": "UTC"})).status_code \
                == 200
        assert [e["name"] for e in await _audit(api, resource="queue")] == ["a3", "a2", "a1"]
        assert [e["name"] for e in await _audit(api, actor="admin1")] == ["office"]
        assert [e["name"] for e in await _audit(api, limit=2, offset=1)] == ["a3", "a2"]
        now = datetime.now(UTC)
        assert len(await _audit(api, since=(now - timedelta(minutes=1)).isoformat())) == 4
        assert await _audit(api, until=(now - timedelta(minutes=1)).isoformat()) == []
        async with api.client(api.admin_key) as c:
            assert (await c.get("/api/audit", params={"limit": 0})).status_code == 422


async def test_hand_edits_in_sql_are_recorded_as_sql(pg_pool, redis_client, pg_dsn) -> None:
    """A write in psql cannot be tied to an API user; the trigger records it as
    ``sql:<database role>``, row by row. Callyard's own connections are not recorded."""
    async with api_app(pg_pool, redis_client) as api:
        await pg_pool.execute("INSERT INTO queues (name) VALUES ('by-callyard')")
        conn = await asyncpg.connect(pg_dsn)  # as psql would: another application name
        try:
            role = await conn.fetchval("SELECT session_user")
            await conn.execute("INSERT INTO queues (name, max_wait_seconds) VALUES ('by-hand', 30)")
            await conn.execute("UPDATE agents SET password_hash = 'x' WHERE username = 'agent1'")
        finally:
            await conn.close()
        entries = await _audit(api, actor=f"sql:{role}")
        assert [(e["via"], e["action"], e["resource"], e["name"]) for e in entries] == [
            ("sql", "update", "agent", "agent1"), ("sql", "create", "queue", "by-hand")]
        assert entries[1]["after"]["max_wait_seconds"] == 30 and entries[1]["client"] is None
        assert (entries[0]["before"]["password"], entries[0]["after"]["password"]) == \
            ("set", "changed")
        assert "password_hash" not in entries[0]["after"]
        assert not [e for e in await _audit(api) if e["name"] == "by-callyard"]


async def test_every_audited_path_is_a_route(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api:
        assert set(AUDITED) <= set(api.app.openapi()["paths"])


async def test_access_log_line_per_request(
    pg_pool, redis_client, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 12: the API kept no access log (uvicorn's was silenced)."""
    caplog.set_level(logging.DEBUG, logger="callyard.http")
    async with api_app(pg_pool, redis_client) as api:
        token = await api.token("super1")
        async with api.client(token) as c:
            assert (await c.get("/api/menus", params={"token": "do-not-log"})).status_code == 200
            assert (await c.get("/healthz")).status_code == 200
        async with api.client() as anonymous:
            assert (await anonymous.get("/api/queues")).status_code == 401
        await asyncio.sleep(0)
    lines = {(r.method, r.path): r for r in caplog.records
             if r.name == "callyard.http"}
    menus = lines[("GET", "/api/menus")]
    assert (menus.levelno, menus.status, menus.user, menus.client) == (
        logging.INFO, 200, "super1", "127.0.0.1")
    assert menus.ms >= 0 and "do-not-log" not in menus.getMessage()
    assert lines[("POST", "/api/auth/login")].status == 200
    assert lines[("GET", "/api/queues")].user is None
    assert lines[("GET", "/api/queues")].status == 401
    assert lines[("GET", "/healthz")].levelno == logging.DEBUG
