"""``callyard asterisk`` as a process against the ARI simulator: CDRs reach PostgreSQL,
health and metrics answer, and SIGTERM drains calls gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from appserver.cdr.writer import CdrWriter
from appserver.devkit.embedded import free_port
from appserver.devkit.sim.ari import AriSimulator
from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall

ROOT = Path(__file__).resolve().parents[1]


def worker_env(sim: AriSimulator, redis_url: str, health_port: int, **extra: str
               ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        CALLYARD_REDIS_URL=redis_url,
        CALLYARD_ASTERISK_ARI=sim.url_with_credentials,
        CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{health_port}",
        CALLYARD_TEST_FLOW_TIMEOUT="30",
        **extra,
    )
    return env


async def start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", "asterisk", "--flow-factory", "flows:factory",
        env=env, stderr=asyncio.subprocess.PIPE)


async def wait_ready(http: aiohttp.ClientSession, port: int, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the worker never became ready")


async def place_three_calls(sim: EngineSimulator, prefix: str) -> SimulatedCall:
    """A menu walk hung up (caller prefix+1), a transfer (+2) and a crashing flow (+3);
    returns the first call."""
    menu = await sim.place_call("9999", caller=f"{prefix}1")
    await menu.wait_for_prompt("file:ivr/welcome")
    await menu.press("1")
    await menu.wait_for_prompt("file:ivr/sales")
    await menu.hangup()
    transfer = await sim.place_call("9999", caller=f"{prefix}2")
    await transfer.wait_for_prompt("file:ivr/welcome")
    await transfer.press("0")
    await transfer.wait_for("transferred")
    crash = await sim.place_call("9998", caller=f"{prefix}3")
    await crash.wait_ended()
    return menu


async def drain_cdrs(redis: aioredis.Redis, pool: asyncpg.Pool, expected: int,
                     timeout: float = 15) -> int:
    writer = CdrWriter(redis, pool, block_ms=50)
    await writer.ensure_group()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    count = 0
    while loop.time() < deadline:
        await writer.step()
        count = int(await pool.fetchval("SELECT count(*) FROM cdrs"))
        if count >= expected:
            break
    return count


@pytest.fixture
async def sim() -> AsyncIterator[AriSimulator]:
    async with AriSimulator() as s:
        yield s


async def test_cdrs_health_metrics_and_graceful_stop(
    sim: AriSimulator, redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    health = free_port()
    proc = await start_worker(worker_env(sim, redis_url, health, CALLYARD_SHUTDOWN_GRACE="20"))
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, health)
            async with http.get(f"http://127.0.0.1:{health}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ok"

            menu = await place_three_calls(sim, "+1555010")
            assert await drain_cdrs(redis_client, pg_pool, 3) == 3
            rows = {r["caller"]: r for r in await pg_pool.fetch("SELECT * FROM cdrs")}
            assert rows["+15550101"]["disposition"] == "hangup"
            assert rows["+15550101"]["answered_at"] is not None
            assert rows["+15550102"]["disposition"] == "transferred"
            assert rows["+15550103"]["disposition"] == "failed"
            assert {r["engine"] for r in rows.values()} == {"asterisk"}
            assert rows["+15550101"]["call_id"] == menu.call_id

            async with http.get(f"http://127.0.0.1:{health}/metrics") as resp:
                text = await resp.text()
            node = f"127.0.0.1:{sim.port}"
            assert f'callyard_calls_total{{engine="asterisk",node="{node}"}} 3.0' in text
            assert f'callyard_calls_in_progress{{engine="asterisk",node="{node}"}} 0.0' in text
            assert f'callyard_engine_connected{{engine="asterisk",node="{node}"}} 1.0' in text
            assert 'callyard_ivr_step_seconds_count{engine="asterisk"}' in text

            # Graceful stop: a call in progress finishes; a new call gets the fallback.
            busy = await sim.place_call("9999", caller="+15550104")
            await busy.wait_for_prompt("file:ivr/welcome")
            proc.send_signal(signal.SIGTERM)
            for _ in range(50):
                async with http.get(f"http://127.0.0.1:{health}/readyz") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.05)
            assert resp.status == 503
            late = await sim.place_call("9999", caller="+15550105")
            await late.wait_for_prompt("file:cannot-complete-temp-error")
            await asyncio.sleep(0.3)
            assert proc.returncode is None  # still serving the call in progress
            await busy.press("1")
            await busy.wait_for_prompt("file:ivr/sales")
            await busy.hangup()
            await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert await drain_cdrs(redis_client, pg_pool, 4) == 4
    row = await pg_pool.fetchrow("SELECT * FROM cdrs WHERE caller = '+15550104'")
    assert row["disposition"] == "hangup" and row["call_id"] == busy.call_id


async def test_a_call_ending_while_its_worker_is_dead_gets_its_cdr(
    sim: AriSimulator, redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    """Seen on the real Asterisk: a worker killed (or frozen, then killed) while its caller
    hung up left no CDR; the next worker found the call's record, no channel, and deleted it."""
    health = free_port()
    env = worker_env(sim, redis_url, health)
    first = await start_worker(env)
    second: asyncio.subprocess.Process | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, health)
            call = await sim.place_call("9999", caller="+15550111")
            await call.wait_for_prompt("file:ivr/welcome")
            placed = time.time()
            first.kill()
            await first.wait()
            await call.hangup()
            await asyncio.sleep(0.5)
            second = await start_worker(env)
            await wait_ready(http, health)
            assert await drain_cdrs(redis_client, pg_pool, 1) == 1
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    row = await pg_pool.fetchrow("SELECT * FROM cdrs")
    assert (row["call_id"], row["disposition"], row["hangup_cause"]) == (
        call.call_id, "failed", "WORKER_LOST")
    assert row["started_at"].timestamp() < placed
