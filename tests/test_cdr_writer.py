"""Stream -> PostgreSQL: batches, acknowledgement after commit, claims, dead letters."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from appserver.cdr import DEAD_STREAM, GROUP, STREAM
from appserver.cdr.record import CdrRecord
from appserver.cdr.sink import CdrSink
from appserver.cdr.writer import CdrWriter
from appserver.store.cdrs import get_cdr

CONFLICTS = "callyard_cdr_conflicts_total"


def record(i: int, **kw: object) -> CdrRecord:
    now = time.time()
    fields: dict[str, object] = dict(
        call_id=f"call-{i}", engine="asterisk", started_at=now - 30, ended_at=now,
        node="n1", caller="+1555", called="9999", answered_at=now - 29,
        menu_path=("main", "sales"), queue="support", wait_seconds=4.5, agent="alice",
        disposition="answered", hangup_cause="NORMAL_CLEARING")
    fields.update(kw)
    return CdrRecord(**fields)  # type: ignore[arg-type]


async def add(redis: aioredis.Redis, records: list[CdrRecord]) -> None:
    sink = CdrSink(redis)
    sink.start()
    for r in records:
        sink(r)
    assert await sink.stop(5)


async def test_batch_is_stored_acknowledged_and_deleted(
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    records = [record(i) for i in range(25)]
    await add(redis_client, [*records, records[3]])  # call-3 twice: a retried XADD
    writer = CdrWriter(redis_client, pg_pool, batch=10, block_ms=50)
    await writer.ensure_group()
    while await writer.step():
        pass
    assert await pg_pool.fetchval("SELECT count(*) FROM cdrs") == 25
    assert (writer.stats.inserted, writer.stats.duplicates) == (25, 1)
    assert await writer.backlog() == (0, 0)
    cdr = await get_cdr(pg_pool, "call-7")
    assert cdr is not None and cdr.menu_path == ("main", "sales") and cdr.agent == "alice"
    assert cdr.wait_seconds == 4.5 and cdr.answered_at is not None


async def test_postgres_outage_keeps_the_batch_until_it_commits(
    redis_client: aioredis.Redis, pg_dsn: str
) -> None:
    from appserver.store.db import create_pool

    pool = await create_pool(pg_dsn, min_size=1, max_size=2)
    await add(redis_client, [record(i) for i in range(5)])
    writer = CdrWriter(redis_client, pool, block_ms=50, retry_max=0.2)
    await writer.ensure_group()
    # Make every insert fail like a lost server would, then bring it back.
    await pool.execute("ALTER TABLE cdrs RENAME TO cdrs_away")
    task = asyncio.ensure_future(writer.step())
    await asyncio.sleep(0.8)
    assert not task.done() and writer.database_ok is False
    assert (await writer.backlog())[1] == 5  # read, not acknowledged
    await pool.execute("ALTER TABLE cdrs_away RENAME TO cdrs")
    assert await asyncio.wait_for(task, 10) == 5
    assert await pool.fetchval("SELECT count(*) FROM cdrs") == 5
    assert await writer.backlog() == (0, 0)
    await pool.close()


async def test_dead_consumer_entries_are_claimed_and_not_doubled(
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    await add(redis_client, [record(i) for i in range(6)])
    dead = CdrWriter(redis_client, pg_pool, consumer="dead", block_ms=50)
    await dead.ensure_group()
    # "dead" read everything, stored half of it (committed) and died before XACK.
    entries = (await redis_client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=10))[0][1]
    assert len(entries) == 6
    from appserver.cdr.writer import to_cdr
    from appserver.store.cdrs import insert_cdrs

    await insert_cdrs(pg_pool, [to_cdr(CdrRecord.from_fields(f)) for _, f in entries[:3]])
    alive = CdrWriter(redis_client, pg_pool, consumer="alive", block_ms=50, claim_idle=0.2)
    assert await alive.step() == 0  # not idle long enough to claim; nothing new
    await asyncio.sleep(0.3)
    assert await alive.step() == 6  # claimed
    assert (alive.stats.inserted, alive.stats.duplicates) == (3, 3)
    assert await pg_pool.fetchval("SELECT count(*) FROM cdrs") == 6
    assert await alive.backlog() == (0, 0)


async def test_bad_entries_go_to_the_dead_stream_and_others_are_stored(
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    await add(redis_client, [record(1), record(2, engine="test"), record(3, wait_seconds=-1.0),
                             record(4)])
    await redis_client.xadd(STREAM, {"call_id": "junk"})
    writer = CdrWriter(redis_client, pg_pool, block_ms=50)
    await writer.ensure_group()
    assert await writer.step() == 5
    rows = await pg_pool.fetch("SELECT call_id FROM cdrs ORDER BY call_id")
    assert [r["call_id"] for r in rows] == ["call-1", "call-4"]
    dead = await redis_client.xrange(DEAD_STREAM)
    assert sorted(f["call_id"] for _, f in dead) == ["call-2", "call-3", "junk"]
    assert all(f["_error"] for _, f in dead)
    assert await writer.backlog() == (0, 0)


async def test_sink_buffers_while_redis_is_unreachable(redis_url: str,
                                                       redis_client: aioredis.Redis) -> None:
    broken = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    sink = CdrSink(broken)
    sink.start()
    sink(record(1))
    sink(record(2))
    assert not await sink.flush(0.5)
    assert sink.backlog == 2
    sink.redis = redis_client  # "Redis is back"
    assert await sink.stop(5)
    assert await redis_client.xlen(STREAM) == 2
    await broken.aclose()


async def test_writer_run_loop_stops_cleanly(redis_client: aioredis.Redis,
                                             pg_pool: asyncpg.Pool) -> None:
    writer = CdrWriter(redis_client, pg_pool, block_ms=50)
    writer.start()
    await add(redis_client, [record(i) for i in range(3)])
    for _ in range(100):
        if await pg_pool.fetchval("SELECT count(*) FROM cdrs") == 3:
            break
        await asyncio.sleep(0.05)
    await writer.stop(5)
    assert await pg_pool.fetchval("SELECT count(*) FROM cdrs") == 3


async def test_a_different_record_for_a_stored_call_is_kept_in_the_dead_stream(
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    """Finding: a connection reusing a live call's Unique-ID wrote a forged CDR, and the real
    call's CDR was then silently dropped by ``ON CONFLICT DO NOTHING``. A record that
    differs from the one stored under its call id is now kept in the dead stream with the
    reason and counted (``callyard_cdr_conflicts_total``); an identical one is a redelivery."""
    before = REGISTRY.get_sample_value(CONFLICTS) or 0.0
    forged, real = record(1, caller="+16660000"), record(1, caller="+15550100")
    writer = CdrWriter(redis_client, pg_pool, block_ms=50)
    await writer.ensure_group()
    await add(redis_client, [forged])
    assert await writer.step() == 1
    await add(redis_client, [real, forged])  # the real call's record, then a redelivery
    assert await writer.step() == 2
    stored = await get_cdr(pg_pool, "call-1")
    assert stored is not None and stored.caller == "+16660000"  # the first stays
    dead = await redis_client.xrange(DEAD_STREAM)
    assert [(f["call_id"], f["caller"]) for _, f in dead] == [("call-1", "+15550100")]
    assert "already stored with a different record" in dead[0][1]["_error"]
    assert (writer.stats.conflicts, writer.stats.duplicates) == (1, 1)
    assert REGISTRY.get_sample_value(CONFLICTS) == before + 1
    assert await writer.backlog() == (0, 0)


async def test_two_different_records_for_one_call_in_a_batch_keep_both(
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    first, second = record(7, disposition="hangup"), record(7, disposition="answered")
    await add(redis_client, [first, second, first])
    writer = CdrWriter(redis_client, pg_pool, block_ms=50)
    await writer.ensure_group()
    assert await writer.step() == 3
    stored = await get_cdr(pg_pool, "call-7")
    assert stored is not None and stored.disposition == "hangup"
    dead = await redis_client.xrange(DEAD_STREAM)
    assert [(f["call_id"], f["disposition"]) for _, f in dead] == [("call-7", "answered")]
    assert "already stored with a different record" in dead[0][1]["_error"]
    assert (writer.stats.inserted, writer.stats.conflicts, writer.stats.duplicates) == (1, 1, 1)
