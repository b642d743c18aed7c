"""``callyard freeswitch`` as a process against the ESL simulator: CDRs reach PostgreSQL,
health and metrics answer, and SIGTERM closes the socket (fallback) and drains calls."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from test_cdr_asterisk import drain_cdrs, place_three_calls, wait_ready

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.esl.behaviour import FALLBACK_PROMPT, Behaviour
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(prompt_seconds=0.15, talk_seconds=0.1, no_answer_seconds=0.1)


def fs_env(redis_url: str, listen: int, health: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        CALLYARD_REDIS_URL=redis_url,
        CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{listen}",
        CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{health}",
        CALLYARD_TEST_FLOW_TIMEOUT="30",
        **extra,
    )
    return env


async def start_fs_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", "freeswitch", "--flow-factory", "flows:factory",
        env=env, stderr=asyncio.subprocess.PIPE)


async def test_cdrs_health_metrics_and_graceful_stop(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    listen, health = free_port(), free_port()
    sim = FreeswitchSimulator([("127.0.0.1", listen)], Behaviour(**FAST))
    await sim.start()  # inbound ESL: the worker's link to the node
    esl = f"127.0.0.1:{sim.esl_port}"
    proc = await start_fs_worker(fs_env(redis_url, listen, health, CALLYARD_SHUTDOWN_GRACE="20",
                                        CALLYARD_FREESWITCH_ESL=f"{esl}:{sim.password}"))
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, health)
            menu = await place_three_calls(sim, "+1555020")
            assert await drain_cdrs(redis_client, pg_pool, 3) == 3
            rows = {r["caller"]: r for r in await pg_pool.fetch("SELECT * FROM cdrs")}
            assert rows["+15550201"]["disposition"] == "hangup"
            assert rows["+15550202"]["disposition"] == "transferred"
            assert rows["+15550203"]["disposition"] == "failed"
            assert {r["engine"] for r in rows.values()} == {"freeswitch"}
            assert rows["+15550201"]["call_id"] == menu.call_id

            async with http.get(f"http://127.0.0.1:{health}/metrics") as resp:
                text = await resp.text()
            assert 'callyard_calls_total{engine="freeswitch"' in text
            assert 'callyard_ivr_step_seconds_count{engine="freeswitch"}' in text
            assert f'callyard_engine_connected{{engine="freeswitch",node="{esl}"}} 1.0' in text

            busy = await sim.place_call("9999", caller="+15550204")
            await busy.wait_for_prompt("file:ivr/welcome")
            proc.send_signal(signal.SIGTERM)
            for _ in range(50):
                async with http.get(f"http://127.0.0.1:{health}/readyz") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.05)
            assert resp.status == 503
            late = await sim.place_call("9999", caller="+15550205")
            await late.wait_for_prompt("file:" + FALLBACK_PROMPT.removesuffix(".wav"))  # fallback
            assert proc.returncode is None  # still serving the call in progress
            await busy.press("1")
            await busy.wait_for_prompt("file:ivr/sales")
            await busy.hangup()
            await asyncio.wait_for(proc.wait(), 15)
    finally:
        await sim.stop()
        if proc.returncode is None:
            proc.kill()
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert await drain_cdrs(redis_client, pg_pool, 4) == 4
    row = await pg_pool.fetchrow("SELECT * FROM cdrs WHERE caller = '+15550204'")
    assert row["disposition"] == "hangup" and row["call_id"] == busy.call_id
