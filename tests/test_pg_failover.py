"""PostgreSQL failover: every process on one multi-host URL with target_session_attrs.

A primary and its synchronous streaming replica (tests/pg_replication.py). ``callyard api``
(which also publishes menus and queues) and ``callyard cdr-writer`` run as subprocesses on
``postgresql://...@primary,replica/callyard?target_session_attrs=read-write``; this process
appends CDRs through the workers' sink and calls the API all along. Mid-stream the primary
fails over to the replica (both orders of crash and promotion).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from pg_replication import PgPair, start_pair
from test_faults import callyard, env, stop, until

from appserver.api.auth import create_api_key
from appserver.cdr.record import CdrRecord
from appserver.cdr.sink import CdrSink
from appserver.devkit.demo import seed_demo
from appserver.devkit.embedded import EmbeddedPostgres, free_port
from appserver.menus import keys
from appserver.queues.store import QueueStore
from appserver.store.db import connect
from ivr.compile import MenuSet

CDR_EVERY = 0.02  # seconds between two CDRs appended by "the workers"


@pytest.fixture
def pg_pair(scratch_dir: Path) -> Iterator[PgPair]:
    primary = EmbeddedPostgres(scratch_dir / "primary")
    replica = EmbeddedPostgres(scratch_dir / "replica")
    try:
        yield start_pair(primary, replica)
    finally:
        replica.stop()
        primary.stop()


async def run_cli(*args: str, **extra: str) -> tuple[int, str]:
    """``callyard ARGS`` to the end: (exit status, stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", *args, env=env(**extra),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def fetchval(dsn: str, sql: str) -> object:
    """One query on a fresh connection (the test's own view, through the same URL)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@dataclass
class Producer:
    """Appends one CDR every CDR_EVERY seconds through the workers' sink."""

    sink: CdrSink
    call_ids: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            call_id = f"failover-{len(self.call_ids):05d}"
            now = time.time()
            self.sink(CdrRecord(call_id=call_id, engine="asterisk", started_at=now - 1,
                                ended_at=now, menu_path=("main",)))
            self.call_ids.append(call_id)
            await asyncio.sleep(CDR_EVERY)


@dataclass
class ApiProbe:
    """Reads the menus through the API every 50 ms; keeps each answer's time, status and
    body."""

    http: httpx.AsyncClient
    answers: list[tuple[float, int, str]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            response = await self.http.get("/api/menus")
            self.answers.append((time.monotonic(), response.status_code, response.text))
            await asyncio.sleep(0.05)

    def since(self, start: int) -> list[int]:
        return [status for _, status, _ in self.answers[start:]]


@contextlib.asynccontextmanager
async def running(*loops: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``loops`` in the background for the block; one that failed fails the test."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, Exception)]  # cancelling is no failure
    if failures:
        raise failures[0]


async def live_menus(redis: aioredis.Redis) -> MenuSet:
    version = int(await redis.get(keys.CURRENT))
    return MenuSet.from_json(await redis.get(keys.version_key(version)))


@pytest.mark.parametrize("crash_first", [True, False],
                         ids=["crash-then-promote", "promote-then-stop"])
async def test_every_process_follows_a_postgresql_failover(
    pg_pair: PgPair, redis_url: str, redis_client: aioredis.Redis, crash_first: bool,
) -> None:
    """crash-then-promote: the primary dies, a while without any primary, the replica is
    promoted. promote-then-stop: the replica is promoted while the old primary still runs
    (its commits now wait for a standby that is gone), then the old primary is stopped."""
    pair = pg_pair
    dsn = pair.url()  # primary first, then the replica
    standby_first = pair.url(pair.replica_port, pair.primary_port)

    # The tools skip a standby listed first: they reach the primary.
    status, out = await run_cli("migrate", CALLYARD_DATABASE_URL=standby_first)
    assert status == 0 and "applied" in out, out
    status, out = await run_cli("psql", "-tA", "-c", "SELECT pg_is_in_recovery()",
                                CALLYARD_DATABASE_URL=standby_first)
    assert (status, out.strip().splitlines()[-1]) == (0, "f"), out
    conn = await connect(dsn)
    try:
        await seed_demo(conn)
        _, key = await create_api_key(conn, "failover")
    finally:
        await conn.close()

    storage = dict(CALLYARD_DATABASE_URL=dsn, CALLYARD_REDIS_URL=redis_url)
    port = free_port()
    api = await callyard("api", "--port", str(port), **storage)
    writer = await callyard("cdr-writer", "--claim-idle", "2", **storage)
    # Every host it lists is up, none writable (only the standby): it waits, then writes.
    standby_writer = await callyard("cdr-writer", "--claim-idle", "2",
                                    CALLYARD_DATABASE_URL=pair.url(pair.replica_port),
                                    CALLYARD_REDIS_URL=redis_url)
    sink = CdrSink(redis_client)
    sink.start()
    producer = Producer(sink)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                             headers={"Authorization": f"Bearer {key}"})
    probe = ApiProbe(http)
    try:
        await until(lambda: _answers(http), 30, "the API")
        await until(lambda: redis_client.exists(keys.CURRENT), 10, "menus published")
        async with running(producer.run(), probe.run()):
            await until(lambda: fetchval(dsn, "SELECT count(*) >= 20 FROM cdrs"), 20,
                        "CDRs stored before the failover")
            assert standby_writer.returncode is None, "a writer on a standby-only URL died"

            if crash_first:
                pair.crash_primary()
                crashed_at = len(probe.answers)
                await until(lambda: 503 in probe.since(crashed_at), 10,
                            "a 503 while there is no primary")
                pair.promote_replica()
            else:
                pair.promote_replica()
                await asyncio.sleep(0.5)  # two read-write servers: the URL still picks the old
                pair.crash_primary()
            promoted_at, promoted = len(probe.answers), time.monotonic()
            await until(lambda: probe.since(promoted_at)[-3:] == [200] * 3, 20,
                        "the API answering again")
            await asyncio.sleep(1.0)  # CDRs keep coming after the failover

        # Edits on the new primary are published: a menu and a queue, through the API.
        before = await live_menus(redis_client)
        menu = (await http.get("/api/menus/main")).json()
        for generated in ("name", "updated_at"):
            menu.pop(generated)
        menu["first_digit_timeout"] = before.menus["main"].first_digit_timeout + 1.5
        assert (await http.put("/api/menus/main", json=menu)).status_code == 200
        await until(lambda: _published(redis_client, menu["first_digit_timeout"]), 10,
                    "the menu edit published from the new primary")
        assert (await http.put("/api/queues/after-failover",
                               json={"max_wait_seconds": 77})).status_code == 200
        await until(lambda: QueueStore(redis_client).queue_config("after-failover"), 10,
                    "the queue published from the new primary")

        assert await sink.flush()
        expected = producer.call_ids
        await until(lambda: fetchval(dsn, f"SELECT count(*) >= {len(expected)} FROM cdrs"),
                    20, "every CDR stored")
        await asyncio.sleep(0.5)  # nothing more may arrive
        conn = await connect(dsn)
        try:
            rows = await conn.fetch("SELECT call_id FROM cdrs")
        finally:
            await conn.close()
        # Each exactly once (call_id is the table's primary key: a retried batch is skipped).
        assert sorted(r["call_id"] for r in rows) == sorted(expected)
        assert await redis_client.xlen("callyard:cdrs") == 0

        # Never a 500: 200, or 503 with what happened while there was no primary.
        assert {status for _, status, _ in probe.answers} <= {200, 503}, probe.answers
        unavailable = [body for _, status, body in probe.answers if status == 503]
        back = next(t for t, status, _ in probe.answers[promoted_at:] if status == 200)
        print(f"{len(unavailable)} answers 503, the API answered 200 {back - promoted:.2f} s"
              f" after the failover, {len(expected)} CDRs")
        assert all("database_unavailable" in body for body in unavailable)
        assert unavailable or not crash_first

        # The tools on the same URL: its first host is gone, the second is the primary.
        status, out = await run_cli("migrate", **storage)
        assert (status, out.strip()) == (0, "database is up to date"), out
        status, out = await run_cli("menus", "publish", **storage)
        assert status == 0 and "live version" in out, out
    finally:
        await http.aclose()
        await sink.stop()
        errors = {name: await stop(proc) for name, proc in
                  (("api", api), ("cdr-writer", writer), ("standby cdr-writer", standby_writer))}
    for name, proc in (("api", api), ("cdr-writer", writer),
                       ("standby cdr-writer", standby_writer)):
        assert proc.returncode == 0, f"{name}: {errors[name][-3000:]}"
        assert "Traceback" not in errors[name], f"{name}: {errors[name][-3000:]}"


async def _answers(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/api/menus")).status_code == 200
    except httpx.TransportError:
        return False


async def _published(redis: aioredis.Redis, timeout: float) -> bool:
    return (await live_menus(redis)).menus["main"].first_digit_timeout == timeout
