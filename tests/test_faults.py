"""Faults with real processes: PostgreSQL stopped, Redis restarted, an engine link cut.

Workers and the CDR writer run as ``callyard`` subprocesses against the ARI simulator in
this process; PostgreSQL and Redis are servers each test starts and stops itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from appserver.devkit.embedded import EmbeddedPostgres, free_port, redis_server_binary
from appserver.devkit.sim.ari import AriSimulator
from appserver.devkit.sim.ari.call import AriSimulatedCall
from appserver.redisconn import Flavour, connect
from appserver.shells import close, reply

ROOT = Path(__file__).resolve().parents[1]
OUTAGE = 30.0  # seconds PostgreSQL stays down


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    base.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                CALLYARD_LOG_LEVEL="WARNING", CALLYARD_TEST_FLOW_TIMEOUT="30")
    base.update(extra)
    return base


async def callyard(*args: str, **extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", *args, env=env(**extra),
        stderr=asyncio.subprocess.PIPE)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> str:
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    return err.decode(errors="replace")


async def http_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


async def status_is(url: str, status: int) -> bool:
    return await http_status(url) == status


async def until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def menu_call(sim: AriSimulator, caller: str) -> AriSimulatedCall:
    """A caller on the published demo menu: hears it, asks to repeat it, hangs up."""
    call = await sim.place_call("9999", caller=caller)
    await call.wait_for_prompt("file:demo/main-menu", 10)
    await call.press("9")
    await call.transcript.wait_for(
        lambda e: e.kind == "prompt_started" and e.detail == "file:demo/main-menu"
        and e.at > call.transcript.entries[-1].at - 5, 10)
    await call.hangup()
    return call


@pytest.fixture
def postgres(scratch_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(scratch_dir / "pg", fast=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def ari() -> AsyncIterator[AriSimulator]:
    async with AriSimulator() as sim:
        yield sim


async def published_demo(dsn: str, redis: aioredis.Redis) -> None:
    from appserver.devkit.demo import seed_demo
    from appserver.menus.reloader import MenuReloader
    from appserver.store.db import connect
    from appserver.store.migrations import migrate

    await migrate(dsn)
    conn = await connect(dsn)
    try:
        await seed_demo(conn)
    finally:
        await conn.close()
    assert await MenuReloader(dsn, redis).reload()


async def test_postgres_outage_loses_and_doubles_no_cdr(
    postgres: EmbeddedPostgres, ari: AriSimulator, redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    port = postgres.running_port()
    assert port is not None
    dsn = postgres.url(port)
    await published_demo(dsn, redis_client)
    health = free_port()
    worker = await callyard("asterisk", CALLYARD_REDIS_URL=redis_url,
                            CALLYARD_ASTERISK_ARI=ari.url_with_credentials)
    storage = dict(CALLYARD_REDIS_URL=redis_url, CALLYARD_DATABASE_URL=dsn)
    writer = await callyard("cdr-writer", "--claim-idle", "2", "--health-listen",
                            f"127.0.0.1:{health}", **storage)
    second_writer: asyncio.subprocess.Process | None = None
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        await ari.wait_app_connected("callyard", 20)
        calls = list(await asyncio.gather(*(menu_call(ari, f"+1555000{i:04d}")
                                             for i in range(5))))
        await until(lambda: pool.fetchval("SELECT count(*) = 5 FROM cdrs"), 15, "first CDRs")
        await until(lambda: status_is(f"http://127.0.0.1:{health}/readyz", 200), 5,
                    "writer ready")
        await pool.close()

        postgres.stop()
        outage_ends = time.monotonic() + OUTAGE
        await until(lambda: status_is(f"http://127.0.0.1:{health}/readyz", 503), 10,
                    "writer reports the database down")
        during: list[AriSimulatedCall] = []
        i = 100
        while time.monotonic() < outage_ends - 3:  # calls keep flowing on published menus
            batch = await asyncio.gather(*(menu_call(ari, f"+1555000{i + k:04d}")
                                           for k in range(5)))
            during += batch
            i += 5
            if len(during) == 10:  # a writer dies holding unacknowledged records
                writer.send_signal(signal.SIGKILL)
                await writer.wait()
                second_writer = await callyard("cdr-writer", "--claim-idle", "2", **storage)
        assert len(during) >= 20
        assert all(c.ended for c in during)
        await asyncio.sleep(max(0.0, outage_ends - time.monotonic()))

        assert postgres._pg_ctl_start(port) == port  # back on the same address
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        assert pool is not None
        expected = {c.call_id for c in calls + during}
        await until(lambda: pool.fetchval("SELECT count(*) >= $1 FROM cdrs", len(expected)),
                    30, "CDRs after the outage")
        await asyncio.sleep(1.0)  # anything doubled or extra would show up by now
        rows = await pool.fetch("SELECT call_id, menu_path, disposition FROM cdrs")
        assert sorted(r["call_id"] for r in rows) == sorted(expected)
        assert all(r["menu_path"] == ["main"] and r["disposition"] == "hangup" for r in rows)
        backlog = await redis_client.xlen("callyard:cdrs")
        assert backlog == 0
    finally:
        await pool.close()
        err = await stop(worker)
        writer_err = await stop(second_writer) if second_writer is not None else ""
        if writer.returncode is None:
            await stop(writer)
    assert worker.returncode == 0, err[-2000:]
    assert second_writer is not None and second_writer.returncode == 0, writer_err[-2000:]


def _redis_server(directory: Path, port: int) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "always",
         "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


async def test_redis_restart_during_calls(scratch_dir: Path, ari: AriSimulator,
                                          pg_pool: asyncpg.Pool) -> None:
    """Calls in progress survive a Redis restart; queue state and CDRs persist (AOF)."""
    from appserver.queues.model import AgentConfig, Member, QueueConfig
    from appserver.queues.store import QueueStore

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(scratch_dir / "redis", port)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    await until(lambda: _ping(client), 10, "Redis up")
    store = QueueStore(client)
    await store.sync_agent(AgentConfig("f_ann"))
    await store.sync_queue(QueueConfig("f_q"), [Member("f_ann")])
    await store.agent_action("f_ann", "login")
    await store.agent_action("f_ann", "break", "lunch")
    await store.enqueue("f_q", "f-waiting", "elsewhere", lease_ms=600_000)
    worker = await callyard("asterisk", "--flow-factory", "flows:factory",
                            CALLYARD_REDIS_URL=url, CALLYARD_ASTERISK_ARI=ari.url_with_credentials)
    try:
        await ari.wait_app_connected("callyard", 20)
        before = [await ari.place_call("9999", caller=f"+1666{i:04d}") for i in range(5)]
        for call in before:
            await call.wait_for_prompt("file:ivr/welcome")
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        for call in before[:2]:  # these end while Redis is down: their CDRs wait in memory
            await call.press("1")
            await call.wait_for_prompt("file:ivr/sales")
            await call.hangup()
        await asyncio.sleep(1.0)
        server = _redis_server(scratch_dir / "redis", port)
        await until(lambda: _ping(client), 10, "Redis back")
        for call in before[2:]:  # calls in progress carry on
            await call.press("1")
            await call.wait_for_prompt("file:ivr/sales")
            await call.hangup()
        after = await ari.place_call("9999", caller="+16669999")  # new calls are served
        await after.wait_for_prompt("file:ivr/welcome", 10)
        await after.hangup()
        stats = await store.stats("f_q")
        assert stats.waiting == 1  # the queue state survived the restart
        status = await store.agent("f_ann")
        assert status is not None and status.state == "break"
        from test_cdr_asterisk import drain_cdrs

        assert await drain_cdrs(client, pg_pool, 6, timeout=20) == 6
        stored = {r["call_id"] for r in await pg_pool.fetch("SELECT call_id FROM cdrs")}
        assert stored == {c.call_id for c in [*before, after]}
    finally:
        err = await stop(worker)
        await client.aclose()
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    assert worker.returncode == 0, err[-2000:]


async def _ping(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False


@pytest.mark.parametrize("flavour", ["asyncio", "sync"])
async def test_factory_clients_replace_connections_a_redis_restart_closed(
    scratch_dir: Path, flavour: Flavour,
) -> None:
    """Idle pooled connections are closed by a Redis restart: the next command gets a new
    connection instead of failing with "Connection closed by server"."""
    port = free_port()
    server = _redis_server(scratch_dir / "redis", port)
    url = f"redis://127.0.0.1:{port}/0"
    probe = aioredis.Redis.from_url(url)
    client = connect(url, flavour)
    try:
        await until(lambda: _ping(probe), 10, "Redis up")
        assert await reply(client.set("k", "before"))  # one idle connection in the pool
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        server = _redis_server(scratch_dir / "redis", port)
        await until(lambda: _ping(probe), 10, "Redis back")
        assert await reply(client.get("k")) == "before"
    finally:
        await close(client)
        await probe.aclose()
        server.send_signal(signal.SIGTERM)
        server.wait(10)


async def test_engine_link_cut_reconnects_other_node_unaffected(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    async with AriSimulator() as one, AriSimulator() as two:
        # Channel ids are "<epoch>.<seq>" like Asterisk's; two nodes started in the same
        # second would reuse them (real nodes need distinct `systemname`s for the same reason).
        two._epoch = one._epoch - 1
        worker = await callyard(
            "asterisk", "--flow-factory", "flows:factory", "--watchdog-interval", "0.5",
            CALLYARD_REDIS_URL=redis_url,
            CALLYARD_ASTERISK_ARI=f"{one.url_with_credentials},{two.url_with_credentials}")
        try:
            await one.wait_app_connected("callyard", 20)
            await two.wait_app_connected("callyard", 20)
            on_one = await one.place_call("9999", caller="+17770001")
            on_two = await two.place_call("9999", caller="+17770002")
            for call in (on_one, on_two):
                await call.wait_for_prompt("file:ivr/welcome")
            await one.drop_event_sockets()
            assert not one.app_connected("callyard")
            # Node two does not notice: its caller walks the menu meanwhile.
            await on_two.press("1")
            await on_two.wait_for_prompt("file:ivr/sales", 3)
            await one.wait_app_connected("callyard", 15)  # reconnected
            await on_one.press("1")
            await on_one.wait_for_prompt("file:ivr/sales", 5)
            for call in (on_one, on_two):
                await call.hangup()
            from test_cdr_asterisk import drain_cdrs

            count = await drain_cdrs(redis_client, pg_pool, 2)
            rows = await pg_pool.fetch("SELECT call_id, node FROM cdrs ORDER BY caller")
            assert count == 2, (rows, on_one.transcript.lines(), await stop(worker))
            assert [r["call_id"] for r in rows] == [on_one.call_id, on_two.call_id]
            assert [r["node"] for r in rows] == [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"]
        finally:
            err = await stop(worker)
        assert worker.returncode == 0, err[-2000:]
