"""Voicemail end to end on both simulators: a real worker process runs the IVR's voicemail
action (tests/vm_flows.py); the message ends with #, at the mailbox's limit or with the
caller's hang-up; the simulator leaves a WAV of that length, and the CDR writer files the
message in PostgreSQL."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from test_cdr_asterisk import drain_cdrs, start_worker, wait_ready, worker_env
from test_freeswitch_e2e import FAST, free_port, stop_worker
from test_freeswitch_e2e import start_worker as start_fs_worker

from appserver.devkit.sim.ari import AriSimulator
from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall
from appserver.devkit.sim.esl.behaviour import Behaviour
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

APPS = "vm_flows:factory"


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def leave_messages(sim: EngineSimulator) -> tuple[SimulatedCall, ...]:
    """Three callers: # after ~1.2 s; silent until the 5 s limit; hang-up after ~1.5 s."""
    async def caller(number: str, end: str) -> SimulatedCall:
        call = await sim.place_call("9997", caller=number)
        await call.wait_for_prompt("file:ivr/welcome")
        await call.press("1")
        await call.wait_for_prompt("file:voicemail/greeting")
        await call.transcript.wait_for(lambda e: e.kind == "recording"
                                       and e.detail.endswith("started"))
        if end == "#":
            await asyncio.sleep(1.2)
            await call.press("#")
            await call.wait_for_prompt("file:voicemail/saved")
        elif end == "hangup":
            await asyncio.sleep(1.5)
            await call.hangup()
        await call.wait_ended(10)
        return call

    return await asyncio.gather(caller("+15550001", "#"), caller("+15550002", "timeout"),
                                caller("+15550003", "hangup"))


async def check_messages(calls: tuple[SimulatedCall, ...], redis: aioredis.Redis,
                         pool: asyncpg.Pool, recordings: Path) -> None:
    hash_call, timeout_call, hangup_call = calls
    assert "beep" in hash_call.transcript.lines()
    assert any(line.endswith(" dtmf") for line in hash_call.transcript.lines())
    assert any(line.endswith(" timeout") for line in timeout_call.transcript.lines())
    assert any(line.endswith(" hangup") for line in hangup_call.transcript.lines())
    assert await drain_cdrs(redis, pool, 3) == 3
    rows = {r["caller"]: r for r in await pool.fetch("SELECT * FROM voicemail_messages")}
    cdrs = {r["caller"]: r for r in await pool.fetch("SELECT * FROM cdrs")}
    assert set(rows) == {"+15550001", "+15550002", "+15550003"}
    expected = {"+15550001": (1.2, hash_call), "+15550002": (5.0, timeout_call),
                "+15550003": (1.5, hangup_call)}
    for number, (seconds, call) in expected.items():
        row = rows[number]
        assert row["mailbox"] == "sales" and row["handled_at"] is None
        assert row["path"] == f"voicemail-sales-{call.call_id}.wav"
        assert row["seconds"] == pytest.approx(seconds, abs=0.5)
        assert wav_seconds(recordings / row["path"]) == pytest.approx(seconds, abs=0.5)
        assert cdrs[number]["disposition"] == "voicemail"


@pytest.fixture
async def recordings(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "recordings"


async def test_voicemail_on_the_freeswitch_simulator(
    recordings: Path, redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    port = free_port()
    worker = start_fs_worker(port, redis_url, CALLYARD_APPS=APPS,
                             CALLYARD_FREESWITCH_RECORDINGS_DIR=str(recordings))
    sim = FreeswitchSimulator([("127.0.0.1", port)], Behaviour(**FAST))
    try:
        calls = await leave_messages(sim)
        await check_messages(calls, redis_client, pg_pool, recordings)
    finally:
        await sim.stop()
        stop_worker(worker)


async def test_voicemail_on_the_asterisk_simulator(
    recordings: Path, redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool
) -> None:
    import aiohttp

    async with AriSimulator(recording_dir=recordings) as sim:
        health = free_port()
        proc = await start_worker(worker_env(sim, redis_url, health, CALLYARD_APPS=APPS))
        try:
            async with aiohttp.ClientSession() as http:
                await wait_ready(http, health)
            calls = await leave_messages(sim)
            await check_messages(calls, redis_client, pg_pool, recordings)
        finally:
            proc.terminate()
            await proc.wait()
