"""Prompts on the real Asterisk where its playback queue shows (Asterisk 22.10.1, 2026-12-03)."""

from __future__ import annotations

import asyncio

from ast_probe import AsteriskProbe


async def test_a_digit_stops_the_greeting_and_the_reprompt_queued_behind_it(
    asterisk: AsteriskProbe,
) -> None:
    """The test flow re-prompts on its 1 s timeout while the 3.2 s greeting still plays: the
    re-prompt queues behind it. A digit then stops what the flow plays now (the re-prompt);
    ARI stops only the playback named, and the caller heard the old greeting to its end
    before the next menu. StopPlay ends every outstanding playback (as FreeSWITCH does)."""
    call = await asterisk.place_call("9999")
    started = await call.wait_for_prompt("file:ivr/welcome", 15)
    await asyncio.sleep(1.5)  # the timeout fired: ivr/timeout + ivr/welcome are queued
    await call.press("1")
    sales = await call.wait_for_prompt("file:ivr/sales", 15)
    lines = call.transcript.lines()
    assert sales.at - started.at < 2.6, lines  # not after the 3.2 s greeting
    assert "prompt_finished file:ivr/welcome stopped" in lines
    assert "prompt_started file:ivr/timeout" not in lines
    await call.hangup()
    await call.wait_ended(15)
