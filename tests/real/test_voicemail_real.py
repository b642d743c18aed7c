"""Voicemail on four targets (both simulators, the real FreeSWITCH and Asterisk): a caller of
8105 presses 1 and leaves a message ended by #, by the mailbox's 5 s limit, or by hanging up;
the engine writes a WAV of about that length, and the CDR writer files the message."""

from __future__ import annotations

import asyncio
import time
import wave
from typing import Any

import asyncpg
import pytest
from conftest import RECORDINGS, TARGETS, time_scale
from stack import Stack

from appserver.devkit.sim.caller import EngineSimulator

ENDS = ("#", "limit", "hangup")


async def message_of(database: str, call_id: str, wait: float = 20) -> asyncpg.Record | None:
    conn = await asyncpg.connect(database)
    try:
        deadline = time.monotonic() + wait
        while True:
            row = await conn.fetchrow("SELECT * FROM voicemail_messages WHERE call_id = $1",
                                      call_id)
            if row is not None or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def speak(engine: Any, call: Any, target: str) -> None:
    """The real engines' probe phones send no audio, and the engines write only what they
    receive: the probe's leg plays a tone to Callyard's side (the caller talks)."""
    if target == "freeswitch":
        # A broadcast that reaches the caller's leg before it parks (just after the answer)
        # runs first and is cut short by the park: the recording stayed empty.
        deadline = time.monotonic() + 5
        while (await engine.api(f"uuid_getvar {call.caller_leg} current_application")
               ).strip() != "park" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await engine.api(f"uuid_broadcast {call.caller_leg} tone_stream://%(60000,0,440) aleg")
    elif target == "asterisk":
        await engine.request("POST", f"/channels/{call.caller_leg}/play", media="tone:440",
                             playbackId=f"talk-{call.caller_leg}")


async def stop_speaking(engine: Any, call: Any, target: str) -> None:
    """Asterisk runs a channel's ARI requests one after the other: the probe's DTMF would
    wait for the endless tone to end."""
    if target == "asterisk":
        await engine.request("DELETE", f"/playbacks/talk-{call.caller_leg}")


def wav_seconds(path: str) -> float:
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("target", TARGETS)
async def test_voicemail(engine: EngineSimulator, target: str, end: str,
                         real_database: str, stack: Stack) -> None:
    try:
        await leave_message(engine, target, end, real_database)
    except (AssertionError, TimeoutError, RuntimeError) as exc:  # with the workers' logs
        raise AssertionError(f"{exc}\n{stack.logs()[-6000:]}") from exc


async def leave_message(engine: EngineSimulator, target: str, end: str,
                        real_database: str) -> None:
    scale = time_scale(target)
    call = await engine.place_call("8105", caller="+15550199")
    await call.wait_for_prompt("file:callyard-test/welcome", timeout=10 * scale)
    await call.press("1")
    await speak(engine, call, target)
    await call.wait_for_prompt("file:voicemail/greeting", timeout=10 * scale)
    await call.transcript.wait_for(
        lambda e: e.kind == "prompt_finished" and e.detail.startswith("file:voicemail/greeting"),
        timeout=15 * scale)
    talk = {"#": 2.5, "limit": 8.0, "hangup": 2.5}[end]
    await asyncio.sleep(talk)
    if end == "#":
        await stop_speaking(engine, call, target)
        await call.press("#")
        await call.wait_for_prompt("file:voicemail/saved", timeout=10 * scale)
    elif end == "hangup":
        await call.hangup()
    else:
        await call.wait_for_prompt("file:voicemail/saved", timeout=10 * scale)
    await call.wait_ended(20 * scale)

    row = await message_of(real_database, call.call_id)
    assert row is not None, call.transcript.lines()
    assert row["mailbox"] == "t-box"
    assert row["path"] == f"voicemail-t-box-{call.call_id}.wav"
    expected = 5.0 if end == "limit" else talk  # the beep comes out of the talk time
    assert row["seconds"] == pytest.approx(expected, abs=1.2)
    file = RECORDINGS[target] / row["path"]
    assert file.is_file(), f"no recording at {file}"
    assert wav_seconds(str(file)) == pytest.approx(expected, abs=1.2)
