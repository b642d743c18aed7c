"""Voicemail in the API: a stored CDR with a message files it (migration 008's trigger); the
console lists it to the mailbox's agents only, plays it with range requests, marks it
handled and pushes new ones live."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
from api_support import api_app, serving

from appserver.devkit.sim.recordings import write_silence


async def _leave(pool: asyncpg.Pool, call_id: str, mailbox: str, seconds: float) -> None:
    extra = {"voicemail": {"mailbox": mailbox, "name": f"voicemail-{mailbox}-{call_id}",
                           "seconds": seconds, "started_at": 1_790_000_000.5}}
    await pool.execute(
        "INSERT INTO cdrs (call_id, engine, caller, started_at, disposition, extra)"
        " VALUES ($1, 'asterisk', '+15550100', now(), 'voicemail', $2)", call_id, extra)


async def _setup(pool: asyncpg.Pool, recordings: Path) -> None:
    await pool.execute("INSERT INTO queues (name) VALUES ('support')")
    await pool.execute("INSERT INTO queue_members (queue_id, agent_id) SELECT q.id, a.id"
                       " FROM queues q, agents a"
                       " WHERE q.name = 'support' AND a.username = 'agent1'")
    await pool.execute("INSERT INTO voicemail_boxes (name, queue_id)"
                       " SELECT 'support', id FROM queues WHERE name = 'support'")
    await pool.execute("INSERT INTO voicemail_boxes (name, agent_id)"
                       " SELECT 'boss', id FROM agents WHERE username = 'super1'")
    write_silence(recordings / "voicemail-support-c1.wav", 2.0)
    await _leave(pool, "c1", "support", 2.0)
    await _leave(pool, "c2", "boss", 1.0)


async def test_agents_see_their_mailboxes_play_and_mark_handled(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with api_app(pg_pool, redis_client, recordings_dir=str(tmp_path)) as api:
        await _setup(pg_pool, tmp_path)
        agent, boss = await api.token("agent1"), await api.token("super1")
        async with api.client(agent) as c:
            listed = (await c.get("/api/agent/voicemail")).json()
            assert [(m["call_id"], m["mailbox"], m["seconds"]) for m in listed] == [
                ("c1", "support", 2.0)]
            other = await pg_pool.fetchval("SELECT id FROM voicemail_messages WHERE call_id='c2'")
            assert (await c.get(f"/api/agent/voicemail/{other}/audio")).status_code == 404
            assert (await c.post(f"/api/agent/voicemail/{other}/handled")).status_code == 404
            mid = listed[0]["id"]
            whole = await c.get(f"/api/agent/voicemail/{mid}/audio")
            assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
            assert len(whole.content) == 44 + 2 * 8000 * 2
            part = await c.get(f"/api/agent/voicemail/{mid}/audio",
                               headers={"Range": "bytes=0-43"})
            assert part.status_code == 206 and part.content == whole.content[:44]
            done = (await c.post(f"/api/agent/voicemail/{mid}/handled")).json()
            assert done["handled_by"] == "agent1" and done["handled_at"]
        async with api.client(boss) as c:  # a supervisor sees every mailbox
            assert {m["call_id"] for m in (await c.get("/api/agent/voicemail")).json()} == {
                "c1", "c2"}


async def test_a_new_message_is_pushed_to_the_console(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with api_app(pg_pool, redis_client, recordings_dir=str(tmp_path)) as api:
        await _setup(pg_pool, tmp_path)
        token = await api.token("agent1")
        async with serving(api) as base, httpx.AsyncClient(base_url=base) as http, \
                http.stream("GET", "/api/agent/voicemail-events",
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            assert await anext(lines) == ": connected"
            await _leave(pg_pool, "c3", "boss", 3.0)  # not agent1's: not pushed
            await _leave(pg_pool, "c4", "support", 4.0)

            async def next_data() -> dict[str, object]:
                async for line in lines:
                    if line.startswith("data: "):
                        return dict(json.loads(line[6:]))
                raise AssertionError("stream ended")

            pushed = await asyncio.wait_for(next_data(), 5)
            assert pushed["call_id"] == "c4" and pushed["mailbox"] == "support"


async def test_the_demo_takes_messages_for_support(pg_pool: asyncpg.Pool) -> None:
    from test_demo import OPEN, _walk

    from ivr.calls import Record

    h = await _walk(pg_pool, ["4"], OPEN)
    assert "file:voicemail/greeting" in h.played
    record = next(c for c in h.commands if isinstance(c, Record))
    assert (record.mailbox, record.max_seconds) == ("support", 120)
    h.run()
    assert h.played[-2:] == ["file:voicemail/review", "file:voicemail/saved"]  # review is on
    assert await pg_pool.fetchval(
        "SELECT overflow_action || ':' || overflow_target FROM queues WHERE name = 'support'"
    ) == "voicemail:support"
