"""Hold, Unhold, EndDial and Supervise on Asterisk: the worker against the ARI simulator.

The flow dials, and the test fires its timers (``worker.deliver(call_id, TimerFired(name))``)
once the caller's transcript shows the previous step, so nothing depends on wall-clock
timing; one flow also uses real timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio

from appserver.asterisk.link import LinkConfig
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulatedCall, AriSimulator, SimEndpoint, SoundCatalog
from appserver.settings import load_settings
from ivr.calls import (
    Answer,
    CallFlow,
    CallInfo,
    Command,
    Dial,
    DialResult,
    EndDial,
    EndSupervise,
    Event,
    Hangup,
    Hold,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    StartTimer,
    Supervise,
    TimerFired,
    Unhold,
)

GOODBYE = Play("bye", (Prompt("file", "ivr/goodbye"),))
SUPERVISOR = "sip:supervise-7@livekit.test"
ON_TIMER: dict[str, Command] = {
    "hold": Hold(), "unhold": Unhold(), "end": EndDial(),
    "listen": Supervise(SUPERVISOR, "listen"), "rejoin": Supervise(SUPERVISOR, "whisper"),
    **{f"to_{mode}": Supervise(SUPERVISOR, mode, join=False)
       for mode in ("listen", "whisper", "barge")},
    "leave": EndSupervise(),
}


class ConsoleFlow:
    """Answers, runs ``on_start``; each timer issues its command (``ON_TIMER``); after the
    dial's result (or with no dial, after ``on_start``) says goodbye and hangs up."""

    def __init__(self, on_start: list[Command]) -> None:
        self.on_start = on_start
        self.events: list[Event] = []
        self.done = False

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), *self.on_start]

    def handle(self, event: Event) -> list[Command]:
        self.events.append(event)
        if isinstance(event, TimerFired):
            return [ON_TIMER[event.name]]
        if isinstance(event, DialResult):
            return [GOODBYE]
        if isinstance(event, PlayFinished) and event.play_id == "bye":
            self.done = True
            return [Hangup()]
        if isinstance(event, HungUp):
            self.done = True
        return []

    def dial_results(self) -> list[DialResult]:
        return [e for e in self.events if isinstance(e, DialResult)]


@pytest_asyncio.fixture(loop_scope="session")
async def sim() -> AsyncIterator[AriSimulator]:
    simulator = AriSimulator(
        sounds=SoundCatalog(default_seconds=0.05),
        endpoints=[
            SimEndpoint("PJSIP", "1001", answer_after=0.02, talk_seconds=60.0),
            SimEndpoint("PJSIP", "1003", behaviour="no_answer"),
            SimEndpoint("PJSIP", "1004", answer_after=0.5, talk_seconds=60.0),
            SimEndpoint("PJSIP", "kamailio/" + SUPERVISOR, answer_after=0.02,
                        talk_seconds=60.0),
        ],
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@dataclass
class Console:
    """The worker, the scripts the next calls' flows run, and the flows created so far."""

    worker: AsteriskWorker
    scripts: list[list[Command]] = field(default_factory=list)
    flows: list[ConsoleFlow] = field(default_factory=list)

    def factory(self, info: CallInfo) -> CallFlow:
        flow = ConsoleFlow(self.scripts.pop(0))
        self.flows.append(flow)
        return flow

    async def place(self, sim: AriSimulator,
                    script: list[Command]) -> tuple[AriSimulatedCall, ConsoleFlow]:
        self.scripts.append(script)
        call = await sim.place_call("9999")
        await call.wait_for("answered")
        return call, self.flows[-1]

    def fire(self, call: AriSimulatedCall, timer: str) -> None:
        self.worker.deliver(call.call_id, TimerFired(timer))


@pytest_asyncio.fixture(loop_scope="session")
async def console(sim: AriSimulator) -> AsyncIterator[Console]:
    settings = load_settings(asterisk_ari=sim.url_with_credentials)
    holder = Console(AsteriskWorker(settings.asterisk_ari, lambda info: holder.factory(info),
                                    link=LinkConfig(reconnect_min=0.05)))
    await holder.worker.start()
    await holder.worker.wait_connected()
    yield holder
    await holder.worker.stop()


async def expect(call: AriSimulatedCall, line: str, after: int = 0) -> int:
    """Wait for the transcript line ``line`` at index ``after`` or later; return its index."""
    entry = await call.transcript.wait_for(
        lambda e: f"{e.kind} {e.detail}".strip() == line, start=after)
    return call.transcript.entries.index(entry)


def leg_channels(sim: AriSimulator) -> list[str]:
    return [c.id for c in sim.channels.values() if c.endpoint]


async def test_hold_unhold_end_dial(
    sim: AriSimulator, console: Console
) -> None:
    call, flow = await console.place(sim, [Dial("1001", timeout=5)])
    at = await expect(call, "bridged 1001")
    (bridge,) = sim.bridges.values()
    (leg,) = leg_channels(sim)
    assert sorted(bridge.channels) == sorted([call.call_id, leg])

    console.fire(call, "hold")
    at = await expect(call, "held on", at)
    at = await expect(call, "moh default", at)
    assert bridge.channels == [leg]  # the agent stays in the bridge, hearing silence

    console.fire(call, "hold")  # already on hold: ignored
    console.fire(call, "unhold")
    at = await expect(call, "moh", at)
    at = await expect(call, "held off", at)
    assert sorted(bridge.channels) == sorted([call.call_id, leg])

    console.fire(call, "end")
    at = await expect(call, "unbridged 1001", at)
    await expect(call, "prompt_started file:ivr/goodbye", at)
    await call.wait_ended()
    assert call.transcript.lines()[-1] == "hangup NORMAL_CLEARING app"
    assert flow.dial_results() == [DialResult("1001", "answered", "NORMAL_CLEARING")]
    lines = call.transcript.lines()
    assert lines.count("held on") == 1 and lines.count("held off") == 1
    assert lines.count("bridged 1001") == 1
    assert not sim.bridges and not leg_channels(sim)


async def test_dial_ending_while_held_stops_the_music(
    sim: AriSimulator, console: Console
) -> None:
    call, flow = await console.place(sim, [Dial("1001", timeout=5)])
    at = await expect(call, "bridged 1001")
    console.fire(call, "hold")
    at = await expect(call, "moh default", at)
    console.fire(call, "end")
    at = await expect(call, "unbridged 1001", at)
    at = await expect(call, "moh", at)  # the driver stops the music on hold
    await expect(call, "prompt_started file:ivr/goodbye", at)
    await call.wait_ended()
    assert [r.outcome for r in flow.dial_results()] == ["answered"]
    assert "held off" not in call.transcript.lines()
    assert not sim.bridges


async def test_without_a_connected_party_hold_and_end_dial_are_ignored(
    sim: AriSimulator, console: Console
) -> None:
    call, flow = await console.place(sim, [Hold("jazz"), Unhold(), EndDial(), GOODBYE])
    await call.wait_ended()
    lines = call.transcript.lines()
    assert lines[1:] == [
        "answered", "prompt_started file:ivr/goodbye", "prompt_finished file:ivr/goodbye done",
        "hangup NORMAL_CLEARING app",
    ]
    assert flow.dial_results() == []
    # Timers firing the same commands later change nothing either.
    call, flow = await console.place(sim, [StartTimer("hold", 0.0), StartTimer("end", 0.01),
                                           Play("wait", (Prompt("file", "ivr/wait"),))])
    await expect(call, "prompt_finished file:ivr/wait done")
    assert [e for e in flow.events if isinstance(e, TimerFired)] == [
        TimerFired("hold"), TimerFired("end")]
    assert not any(line.startswith(("held", "moh", "unbridged"))
                   for line in call.transcript.lines())
    await call.hangup()


async def test_end_dial_while_ringing(
    sim: AriSimulator, console: Console
) -> None:
    call, flow = await console.place(sim, [Dial("1003", timeout=5)])
    at = await expect(call, "dialed 1003")
    for _ in range(100):  # until the leg rings
        if any(sim.channels[c].state == "Ringing" for c in leg_channels(sim)):
            break
        await asyncio.sleep(0.01)
    console.fire(call, "hold")  # ringing: the caller gets the music at once
    at = await expect(call, "moh default", at)
    console.fire(call, "end")
    at = await expect(call, "moh", at)  # the dial ended: no music left on the caller
    await expect(call, "prompt_started file:ivr/goodbye", at)
    await call.wait_ended()
    assert flow.dial_results() == [DialResult("1003", "no_answer", "ORIGINATOR_CANCEL")]
    lines = call.transcript.lines()
    assert not any(line.startswith(("bridged", "held", "unbridged")) for line in lines)
    assert not leg_channels(sim)


async def test_hold_while_ringing_keeps_the_caller_out_of_the_bridge(
    sim: AriSimulator, console: Console
) -> None:
    """The console can ask for hold before the agent's leg answered (LiveKit SIP answers
    late): the party is bridged alone, the caller joins on Unhold."""
    call, flow = await console.place(sim, [Dial("1004", timeout=5)])
    at = await expect(call, "dialed 1004")
    console.fire(call, "hold")
    at = await expect(call, "moh default", at)
    for _ in range(200):  # until the party answered and sits in the bridge
        if sim.bridges and next(iter(sim.bridges.values())).channels:
            break
        await asyncio.sleep(0.01)
    (bridge,) = sim.bridges.values()
    (leg,) = leg_channels(sim)
    assert bridge.channels == [leg] and "bridged 1004" not in call.transcript.lines()
    console.fire(call, "unhold")
    at = await expect(call, "moh", at)
    await expect(call, "bridged 1004", at)
    assert sorted(bridge.channels) == sorted([call.call_id, leg])
    console.fire(call, "end")
    await expect(call, "prompt_started file:ivr/goodbye", at)
    await call.wait_ended()
    assert [r.outcome for r in flow.dial_results()] == ["answered"]


def supervisor_channels(sim: AriSimulator) -> list[str]:
    return [c.id for c in sim.channels.values() if c.endpoint and "supervise" in c.endpoint]


async def test_supervise_listen_whisper_barge_on_one_leg(
    sim: AriSimulator, console: Console
) -> None:
    """A snoop on the party's leg (spy both; whisper out for whisper), bridged with the
    supervisor; barge puts the supervisor into the call's bridge; modes change on one leg."""
    call, _ = await console.place(sim, [Dial("1001", timeout=5)])
    at = await expect(call, "bridged 1001")
    (bridge,) = sim.bridges.values()
    console.fire(call, "listen")
    at = await expect(call, "supervised supervise-7 heard_by=nobody", at)
    (leg,) = supervisor_channels(sim)
    snoops = [c for c in sim.channels.values() if c.snoop]
    assert [(s.snoop.spy, s.snoop.whisper) for s in snoops if s.snoop] == [("both", "none")]
    assert snoops[0].snoop and snoops[0].snoop.target in bridge.channels  # the party's leg
    assert snoops[0].snoop.target != call.call_id
    for step, heard in (("to_whisper", "agent"), ("to_barge", "caller,agent"),
                        ("to_listen", "nobody"), ("to_whisper", "agent")):
        console.fire(call, step)
        at = await expect(call, f"supervised supervise-7 heard_by={heard}", at)
        assert supervisor_channels(sim) == [leg]  # the same leg, never dialled again
        assert len([c for c in sim.channels.values() if c.snoop]) == (heard != "caller,agent")
    console.fire(call, "leave")
    at = await expect(call, "supervised supervise-7 gone", at)
    assert not supervisor_channels(sim) and not any(c.snoop for c in sim.channels.values())
    async with asyncio.timeout(2):
        while len(sim.bridges) > 1:  # the supervisor's own bridge goes, the call's stays
            await asyncio.sleep(0.01)
    console.fire(call, "rejoin")  # joins again whispering: a new leg
    at = await expect(call, "supervised supervise-7 heard_by=agent", at)
    assert supervisor_channels(sim) and supervisor_channels(sim) != [leg]
    console.fire(call, "end")  # the party hangs up: the supervisor goes too
    at = await expect(call, "unbridged 1001", at)
    await expect(call, "supervised supervise-7 gone", at)
    await call.wait_ended()
    assert not sim.bridges and not leg_channels(sim)
    assert not any(c.snoop for c in sim.channels.values())


async def test_supervisor_answering_before_the_party_is_attached_once_it_answers(
    sim: AriSimulator, console: Console
) -> None:
    call, _ = await console.place(sim, [Dial("1004", timeout=5), Supervise(SUPERVISOR,
                                                                           "whisper")])
    at = await expect(call, "bridged 1004")
    await expect(call, "supervised supervise-7 heard_by=agent", at)
    console.fire(call, "end")
    await expect(call, "supervised supervise-7 gone", at)
    await call.wait_ended()
    assert not sim.bridges and not leg_channels(sim)
