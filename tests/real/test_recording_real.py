"""Call recording on four targets: a caller of 8113 (queue t-rec, recorded always) talks to
the SIP agent t-rec for a few seconds; the engine writes the conversation from the moment
they are bridged (FreeSWITCH uuid_record with RECORD_BRIDGE_REQ, Asterisk's bridge record)
and the CDR files it in ``recordings``."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import RECORDINGS, TARGETS, time_scale
from stack import Stack
from test_agents_real import login, logout, seen
from test_voicemail_real import speak, wav_seconds

from appserver.devkit.sim.caller import EngineSimulator

TALK = 3.0


@pytest.fixture
async def console(stack: Stack):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=15) as http:
        yield http


@pytest.mark.parametrize("target", TARGETS)
async def test_recorded_queue_call(engine: EngineSimulator, target: str,
                                   console: httpx.AsyncClient, real_database: str,
                                   stack: Stack) -> None:
    import asyncpg
    scale = time_scale(target)
    call = await engine.place_call("8113", caller="+15550901")
    await seen(call, "moh", "default", 5 * scale)
    await speak(engine, call, target)
    auth = await login(console, "t-rec")
    try:
        await seen(call, "bridged", "1103", 10 * scale)
        await asyncio.sleep(TALK)
        await call.hangup()
        await call.wait_ended(10 * scale)
    finally:
        await logout(console, auth)
    conn = await asyncpg.connect(real_database)
    try:
        row = None
        for _ in range(100):
            row = await conn.fetchrow("SELECT * FROM recordings WHERE call_id = $1",
                                      call.call_id)
            if row is not None:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    assert row is not None, f"{call.transcript.lines()}\n{stack.logs()[-6000:]}"
    assert (row["queue"], row["agent"]) == ("t-rec", "t-rec")
    assert row["path"] == f"recording-t-rec-{call.call_id}.wav"
    file = RECORDINGS[target] / row["path"]
    assert file.is_file(), f"no recording at {file}\n{stack.logs()[-6000:]}"
    assert wav_seconds(str(file)) == pytest.approx(TALK, abs=1.5)
