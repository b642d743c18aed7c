"""Barge-in on the real FreeSWITCH 1.10.12: a menu's greeting ends in the frame in which the
engine reads the caller's key, not a frame later.

The driver plays an interruptible prompt with ``playback_terminators`` set to its keys, so
the playback itself stops at the key. Stopped by the worker's ``uuid_break`` after the DTMF
event instead, it played one more frame (20 ms), and the next prompt started a frame later
again. The test takes the time each event reaches it (the engine's own stamps move in 20 ms
steps): the DTMF and the playback's stop come together when the engine stopped it, a frame
apart when the worker did.
"""

from __future__ import annotations

import time

from fs_probe import FreeswitchProbe, RealFsCall

from appserver.freeswitch import esl_codec as codec

WELCOME = "file:ivr/welcome"


async def test_a_key_stops_the_greeting_in_the_frame_the_engine_reads_it(
    freeswitch: FreeswitchProbe,
) -> None:
    await _greeting_stops_at_the_key(freeswitch)


async def test_a_parked_calls_greeting_stops_in_that_frame_too(
    freeswitch_park: FreeswitchProbe,
) -> None:
    await _greeting_stops_at_the_key(freeswitch_park)


async def _greeting_stops_at_the_key(probe: FreeswitchProbe) -> None:
    call = await probe.place_call("9999", caller="+15550930")
    assert isinstance(call, RealFsCall)
    seen: list[tuple[float, codec.EslEvent]] = []
    heard = call.on_event

    def on_event(event: codec.EslEvent) -> None:
        seen.append((time.perf_counter(), event))
        heard(event)

    call.on_event = on_event  # type: ignore[method-assign]
    await call.wait_for_prompt(WELCOME, 15)
    await call.press("1")
    await call.wait_for_prompt("file:ivr/sales", 15)
    await call.hangup()
    await call.wait_ended(20)

    def arrival(name: str, **headers: str) -> float:
        return next(at for at, e in seen if e.name == name
                    and all(e.get(k) == v for k, v in headers.items()))

    key = arrival("DTMF", **{"DTMF-Digit": "1"})
    stopped = arrival("PLAYBACK_STOP", **{"Playback-Status": "break"})
    late = 1000 * (stopped - key)
    assert late < 10, f"the greeting stopped {late:.1f} ms after the key"
