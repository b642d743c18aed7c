"""SIGTERM during 100 calls: no call silently dropped.

Asterisk: calls that end within the grace period are finished by the stopping worker; the
rest stay in Stasis and the next worker re-adopts them; calls arriving meanwhile get the
dialplan's fallback. FreeSWITCH: the socket closes at once (new calls fall back); calls
still up when the grace period ends are recorded as failed (WORKER_SHUTDOWN).
Every call served by a flow has exactly one CDR. (A worker without ``CALLYARD_REDIS_URL``
starts nothing: tests/test_storage_policy.py.)
"""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import redis.asyncio as aioredis
from test_cdr_asterisk import drain_cdrs
from test_faults import callyard, stop

from appserver.devkit.embedded import free_port
from appserver.devkit.sim.ari import AriSimulator
from appserver.devkit.sim.ari.call import AriSimulatedCall
from appserver.devkit.sim.esl.behaviour import FALLBACK_PROMPT, Behaviour
from appserver.devkit.sim.esl.call import EslSimCall
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

CALLS = 100
GRACE = 4.0


def welcomes(call: AriSimulatedCall) -> int:
    """How often the caller heard the menu start (a re-adopted call hears it again)."""
    return call.prompts().count("file:ivr/welcome")


async def test_asterisk_sigterm_during_100_calls(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    async with AriSimulator() as sim:
        extra = dict(CALLYARD_REDIS_URL=redis_url, CALLYARD_ASTERISK_ARI=sim.url_with_credentials,
                     CALLYARD_SHUTDOWN_GRACE=str(GRACE), CALLYARD_LOG_LEVEL="INFO")
        first = await callyard("asterisk", "--flow-factory", "flows:factory", **extra)
        second = None
        try:
            await sim.wait_app_connected("callyard", 20)
            calls = [await sim.place_call("9999", caller=f"+1888{i:04d}") for i in range(CALLS)]
            await asyncio.gather(*(c.wait_for_prompt("file:ivr/welcome", 20) for c in calls))
            short, long = calls[: CALLS // 2], calls[CALLS // 2:]
            first.send_signal(signal.SIGTERM)

            async def finish(call: AriSimulatedCall, delay: float) -> None:
                await asyncio.sleep(delay)
                await call.press("1")
                await call.wait_for_prompt("file:ivr/sales", 10)
                await call.hangup()

            # Half the callers finish within the grace period, on the stopping worker.
            await asyncio.gather(*(finish(c, 0.2 + i * 0.03) for i, c in enumerate(short)))
            late = [await sim.place_call("9999", caller=f"+1889{i:04d}") for i in range(5)]
            for call in late:  # new calls meanwhile: the dialplan's fallback, not silence
                await call.wait_for_prompt("file:cannot-complete-temp-error", 10)
            err = await stop(first, signal.SIGCONT)  # it exits by itself after the grace
            assert first.returncode == 0, err[-2000:]
            assert f"{len(long)} call(s) stay in Stasis" in err
            assert not any(c.ended for c in long)

            # The next worker re-adopts the others: they hear the menu again and go on.
            second = await callyard("asterisk", "--flow-factory", "flows:factory", **extra)
            await sim.wait_app_connected("callyard", 20)

            async def resume(call: AriSimulatedCall) -> None:
                await call.transcript.wait_for(lambda e: welcomes(call) >= 2, 20)
                await finish(call, 0)

            await asyncio.gather(*(resume(c) for c in long))
            assert all(c.ended for c in calls + late)
            assert await drain_cdrs(redis_client, pg_pool, CALLS, timeout=20) == CALLS
            rows = await pg_pool.fetch("SELECT call_id, disposition FROM cdrs")
            assert sorted(r["call_id"] for r in rows) == sorted(c.call_id for c in calls)
            assert {r["disposition"] for r in rows} == {"hangup"}
        finally:
            if first.returncode is None:
                await stop(first)
            if second is not None:
                err = await stop(second)
                assert second.returncode == 0, err[-2000:]


async def test_freeswitch_sigterm_during_100_calls(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    listen = free_port()
    worker = await callyard("freeswitch", "--flow-factory", "flows:factory",
                            CALLYARD_REDIS_URL=redis_url, CALLYARD_SHUTDOWN_GRACE=str(GRACE),
                            CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{listen}")
    sim = FreeswitchSimulator([("127.0.0.1", listen)], Behaviour(prompt_seconds=0.15))
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", listen)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        calls = [await sim.place_call("9999", caller=f"+1777{i:04d}") for i in range(CALLS)]
        await asyncio.gather(*(c.wait_for_prompt("file:ivr/welcome", 20) for c in calls))
        worker.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        late = await sim.place_call("9999", caller="+17779999")
        await late.wait_for_prompt("file:" + FALLBACK_PROMPT.removesuffix(".wav"), 10)

        async def finish(call: EslSimCall) -> None:
            await call.press("1")
            await call.wait_for_prompt("file:ivr/sales", 10)
            await call.hangup()

        finishing, stuck = calls[:90], calls[90:]
        await asyncio.gather(*(finish(c) for c in finishing))
        err = await stop(worker, signal.SIGCONT)  # exits by itself after the grace period
        assert worker.returncode == 0, err[-2000:]
        for call in stuck:  # the worker went away: FreeSWITCH ends or continues the call
            await call.wait_ended(10)
        assert await drain_cdrs(redis_client, pg_pool, CALLS, timeout=20) == CALLS
        rows = await pg_pool.fetch("SELECT call_id, disposition, hangup_cause FROM cdrs")
        by_id = {r["call_id"]: r for r in rows}
        assert set(by_id) == {c.call_id for c in calls}
        assert {(by_id[c.call_id]["disposition"], by_id[c.call_id]["hangup_cause"])
                for c in stuck} == {("failed", "WORKER_SHUTDOWN")}
        assert {by_id[c.call_id]["disposition"] for c in finishing} == {"hangup"}
    finally:
        await sim.stop()
        if worker.returncode is None:
            await stop(worker)
