"""Call recordings in PostgreSQL and on disk: a stored CDR files its recordings, the CDR
writer adds their SHA-256, the API lists and plays them (range requests, an audit entry per
listen, agents only their own and only when allowed), and ``callyard recordings purge``
deletes the expired ones (files and rows), again and again harmlessly."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from api_support import api_app

from appserver.cdr import STREAM
from appserver.cdr.record import CdrRecord
from appserver.cdr.writer import CdrWriter
from appserver.devkit.sim.recordings import write_silence

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400.0


def _record(call_id: str, agent: str, started: float, seconds: float) -> CdrRecord:
    name = f"recording-support-{call_id}"
    return CdrRecord(call_id=call_id, engine="freeswitch", started_at=started,
                     ended_at=started + seconds + 5, caller="+15550100", queue="support",
                     agent=agent, disposition="answered", extra={"recordings": [
                         {"queue": "support", "name": name, "started_at": started + 2,
                          "seconds": seconds}]})


async def _store(redis: aioredis.Redis, pool: asyncpg.Pool, root: Path,
                 *records: CdrRecord) -> None:
    """Through the CDR writer, as in production (the files exist: the calls are over)."""
    for r in records:
        write_silence(root / f"recording-support-{r.call_id}.wav",
                      int(r.extra["recordings"][0]["seconds"]))
        await redis.xadd(STREAM, r.to_fields())
    writer = CdrWriter(redis, pool, block_ms=50, recordings_dir=str(root))
    await writer.ensure_group()
    await writer.step()


async def test_writer_files_recordings_with_their_checksum(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    record = _record("c1", "agent1", time.time(), 3.0)
    record.extra["recordings"][0]["seconds"] = 3.6  # the worker's clock: the file says 3.0
    await _store(redis_client, pg_pool, tmp_path, record)
    row = await pg_pool.fetchrow("SELECT * FROM recordings")
    assert (row["call_id"], row["queue"], row["agent"], row["seconds"]) == (
        "c1", "support", "agent1", 3.0)
    data = (tmp_path / row["path"]).read_bytes()
    assert row["checksum"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("allowed", [False, True])
async def test_playback_access_range_and_audit(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path, allowed: bool
) -> None:
    now = time.time()
    await _store(redis_client, pg_pool, tmp_path, _record("c1", "agent1", now, 2.0),
                 _record("c2", "super1", now, 1.0))
    ids = {r["call_id"]: r["id"] for r in await pg_pool.fetch("SELECT id, call_id FROM recordings")}
    async with api_app(pg_pool, redis_client, recordings_dir=str(tmp_path),
                       recordings_agent_access=allowed) as api:
        agent, boss = await api.token("agent1"), await api.token("super1")
        async with api.client(agent) as c:
            listed = await c.get("/api/recordings")
            if allowed:
                assert [r["call_id"] for r in listed.json()] == ["c1"]  # their own only
                assert (await c.get(f"/api/recordings/{ids['c2']}/audio")).status_code == 404
                own = await c.get(f"/api/recordings/{ids['c1']}/audio")
                assert own.status_code == 200 and len(own.content) == 44 + 2 * 8000 * 2
            else:
                assert listed.status_code == 403
                assert (await c.get(f"/api/recordings/{ids['c1']}/audio")).status_code == 403
        async with api.client(boss) as c:
            assert {r["call_id"] for r in (await c.get("/api/recordings")).json()} == {
                "c1", "c2"}
            part = await c.get(f"/api/recordings/{ids['c1']}/audio",
                               headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and len(part.content) == 100
            assert (await c.get(f"/api/recordings/{ids['c2']}/audio")).status_code == 200
    listens = await pg_pool.fetch("SELECT actor, name FROM audit_log WHERE action = 'listen'"
                                  " ORDER BY id")
    expected = [("agent1", f"{ids['c1']}:c1")] if allowed else []
    assert [(r["actor"], r["name"]) for r in listens] == [
        *expected, ("super1", f"{ids['c2']}:c2")]  # not the seek (a range past the start)


async def test_purge_deletes_expired_files_and_rows_idempotently(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path, pg_dsn: str
) -> None:
    now = time.time()
    await _store(redis_client, pg_pool, tmp_path, _record("old", "agent1", now - 10 * DAY, 1.0),
                 _record("new", "agent1", now - 1 * DAY, 1.0))
    env = {**os.environ, "CALLYARD_DATABASE_URL": pg_dsn,
           "CALLYARD_RECORDINGS_DIR": str(tmp_path), "CALLYARD_RECORDINGS_RETENTION_DAYS": "7"}

    def purge() -> str:
        out = subprocess.run([sys.executable, "-m", "appserver.cli", "recordings", "purge"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert purge() == "purged 1 recording(s) older than 7 day(s); 1 file(s) deleted"
    assert purge() == "purged 0 recording(s) older than 7 day(s); 0 file(s) deleted"
    assert [r["call_id"] for r in await pg_pool.fetch("SELECT call_id FROM recordings")] == [
        "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recording-support-new.wav"]
