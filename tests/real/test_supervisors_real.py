"""A supervisor acts on live callers through ``callyard api``, on every target: moves a
waiting caller into another queue (the worker serving the call keeps serving it there: new
music on hold, and that queue's agent gets the caller) and hangs up a connected call (the
agent's LiveKit leg, then the caller) and a waiting one."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import TARGETS, time_scale
from stack import Stack
from test_agents_real import login, logout, offered, seen
from test_scenarios_real import cdrs_of

from appserver.api.auth import create_api_key
from appserver.devkit.sim.caller import EngineSimulator


def _extra(row: asyncpg.Record) -> dict[str, Any]:
    value = row["extra"]
    return dict(json.loads(value) if isinstance(value, str) else value or {})


@pytest.fixture
async def supervisor(stack: Stack, real_database: str) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with a supervisor's API key."""
    conn = await asyncpg.connect(real_database)
    try:
        _, key = await create_api_key(conn, f"t-super-{uuid.uuid4().hex[:6]}",  # type: ignore[arg-type]
                                      "supervisor")
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=15,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        yield http


@pytest.fixture
async def console(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=15) as http:
        yield http


@pytest.mark.parametrize("target", TARGETS)
async def test_supervisor_moves_then_hangs_up_callers(
    engine: EngineSimulator, target: str, supervisor: httpx.AsyncClient,
    console: httpx.AsyncClient, real_database: str,
) -> None:
    scale = time_scale(target)
    # Nobody staffs t-queue: the caller waits there, then is moved to t-web.
    call = await engine.place_call("8110", caller="+15550901")
    at = await seen(call, "moh", "default", 5 * scale)
    r = await supervisor.post(f"/api/supervisor/calls/{call.call_id}/move",
                              json={"queue": "t-web", "priority": 7})
    assert r.status_code == 200, r.text
    assert r.json() == {"call": call.call_id, "queue": "t-web", "priority": 7}
    at = await seen(call, "moh", "default", 10 * scale, at)  # t-web's hold music
    auth = await login(console, "t-web")
    try:
        await offered(console, auth, call, 10 * scale)  # t-web's agent gets the caller
        r = await console.post("/api/agent/accept", json={"call": call.call_id}, headers=auth)
        assert r.status_code == 200, r.text
        room = f"call-{call.call_id}"
        at = await seen(call, "bridged", f"{room}*", 10 * scale, at)
        r = await supervisor.post(f"/api/supervisor/calls/{call.call_id}/hangup")
        assert r.status_code == 202 and r.json()["result"] == "sent", r.text
        await call.wait_ended(15 * scale)
        rows = await cdrs_of(real_database, call.call_id, 15)
        assert [(r["disposition"], r["queue"], r["agent"]) for r in rows] == [
            ("answered", "t-queue", "t-web")]
        assert _extra(rows[0]).get("queues") == ["t-queue", "t-web"]

        # A waiting caller hung up by the supervisor.
        r = await console.post("/api/agent/break", json={"reason": "break"}, headers=auth)
        assert r.status_code == 200, r.text
        waiting = await engine.place_call("8110", caller="+15550902")
        await seen(waiting, "moh", "default", 5 * scale)
        r = await supervisor.post(f"/api/supervisor/calls/{waiting.call_id}/hangup")
        assert r.status_code == 202 and r.json()["result"] == "sent", r.text
        await waiting.wait_ended(15 * scale)
        rows = await cdrs_of(real_database, waiting.call_id, 15)
        assert [(r["disposition"], r["queue"]) for r in rows] == [("hangup", "t-queue")]
        assert _extra(rows[0]).get("ended_by") == "supervisor"
        r = await supervisor.post(f"/api/supervisor/calls/{waiting.call_id}/hangup")
        assert r.status_code == 404
    finally:
        await logout(console, auth)
