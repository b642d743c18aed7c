"""Hold, Unhold, EndDial and Supervise end to end: a real ``callyard freeswitch`` worker
(subprocess) runs :class:`StepFlow` for calls from the ESL simulator (real TCP, in this process).

The worker loads this module as its flow factory (``test_freeswitch_hold:factory``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr import calls as c

ROOT = Path(__file__).resolve().parents[1]
SUPERVISOR = "sip:supervise-7@livekit.test"
STEP = 0.4  # seconds between the flow's steps (the simulated party answers after 0.05 s)

# called number -> (commands at start, one command per STEP after that)
SCRIPTS: dict[str, tuple[list[c.Command], list[c.Command]]] = {
    "7001": ([c.Answer(), c.Dial("1001")], [c.Hold(), c.Unhold(), c.EndDial()]),
    "7002": ([c.Answer(), c.Hold(), c.Unhold(), c.EndDial()], []),
    "7003": ([c.Answer(), c.Dial("1002")], [c.EndDial()]),
    "7004": ([c.Answer(), c.Dial("1001")], [c.Hold("jazz"), c.EndDial()]),
    # a supervisor listens, whispers, barges, listens again on the same leg, then leaves
    "7005": ([c.Answer(), c.Supervise(SUPERVISOR), c.Dial("1001")], [
        c.Supervise(SUPERVISOR, "listen"), c.Supervise(SUPERVISOR, "whisper", join=False),
        c.Supervise(SUPERVISOR, "barge", join=False),
        c.Supervise(SUPERVISOR, "listen", join=False), c.EndSupervise(), c.EndDial()]),
    # joins whispering, joins again (a new leg), and goes when the dialled party does
    "7006": ([c.Answer(), c.Dial("1001")], [
        c.Supervise(SUPERVISOR, "whisper"), c.Supervise(SUPERVISOR, "barge"), c.EndDial()]),
}


def _play(name: str) -> c.Play:
    return c.Play("result", (c.Prompt("file", name),))


class StepFlow:
    """Runs a script; says the dial's outcome as a prompt (``result/<outcome>``), hangs up."""

    def __init__(self) -> None:
        self.steps: list[c.Command] = []
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def start(self, call: c.CallInfo) -> list[c.Command]:
        start, self.steps = SCRIPTS[call.called]
        self.steps = list(self.steps)
        return [*start, c.StartTimer("step", STEP) if self.steps else _play("result/no-dial")]

    def handle(self, event: c.Event) -> list[c.Command]:
        if isinstance(event, c.TimerFired) and self.steps:
            step = self.steps.pop(0)
            return [step, c.StartTimer("step", STEP)] if self.steps else [step]
        if isinstance(event, c.DialResult):
            return [_play(f"result/{event.outcome}")]
        if isinstance(event, c.PlayFinished):
            self._done = True
            return [c.Hangup()]
        if isinstance(event, c.HungUp):
            self._done = True
        return []


def factory(info: c.CallInfo) -> c.CallFlow | None:
    return StepFlow() if info.called in SCRIPTS else None


# ------------------------------------------------------------------ the worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory,
           worker_redis_url: str) -> Iterator[tuple[int, Path]]:
    """(port, log file) of a worker running this module's flows."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("hold") / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{port}",
        "CALLYARD_FREESWITCH_ESL": "",
        "CALLYARD_LOG_LEVEL": "WARNING",
        "CALLYARD_REDIS_URL": worker_redis_url,
    }
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appserver.cli", "freeswitch",
             "--flow-factory", "test_freeswitch_hold:factory"],
            cwd=ROOT, env=env, stderr=log_file,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "worker did not start listening"
                time.sleep(0.05)
        yield port, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_hold_unhold_end_dial_on_the_simulator(worker: tuple[int, Path]) -> None:
    from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator

    port, log_path = worker
    behaviour = Behaviour(
        prompt_seconds=0.1,
        talk_seconds=30,  # the party would stay on the line: only EndDial ends these dials
        no_answer_seconds=30,
        endpoints={"1001": "answer", "1002": "no_answer"},
    )
    sim = FreeswitchSimulator([("127.0.0.1", port)], behaviour)
    calls = [await sim.place_call(number) for number in ("7001", "7002", "7003", "7004")]
    await asyncio.gather(*(call.wait_ended(10) for call in calls))
    await sim.stop()

    def story(lines: list[str]) -> list[str]:
        keep = ("dialed", "bridged", "held", "moh", "unbridged", "prompt_started", "hangup")
        return [line for line in lines if line.startswith(keep)]

    hold, no_dial, ringing, held_end = (story(call.transcript.lines()) for call in calls)
    # the dialled party is held, resumed and hung up; the caller stays for the result
    assert hold == [
        "dialed 1001", "bridged 1001",
        "held on", "moh default", "moh", "held off",
        "unbridged 1001",
        "prompt_started file:result/answered",
        "hangup NORMAL_CLEARING app",
    ]  # fmt: skip
    assert no_dial == ["prompt_started file:result/no-dial", "hangup NORMAL_CLEARING app"]
    assert ringing == [
        "dialed 1002", "prompt_started file:result/no_answer", "hangup NORMAL_CLEARING app"
    ]  # fmt: skip
    # EndDial while held: the dial ends, then the driver takes the music off the caller
    assert held_end == [
        "dialed 1001", "bridged 1001",
        "held on", "moh jazz",
        "unbridged 1001",
        "moh", "held off",
        "prompt_started file:result/answered",
        "hangup NORMAL_CLEARING app",
    ]  # fmt: skip
    log = log_path.read_text()
    for ignored in ("Hold ignored", "Unhold ignored", "EndDial ignored"):
        assert log.count(ignored) == 1, log
    assert "refused a command" not in log and "Traceback" not in log, log


async def test_supervise_on_the_simulator(worker: tuple[int, Path]) -> None:
    """Which legs hear the supervisor, as mod_eavesdrop mixes them (the simulator follows
    switch_ivr_async.c; tests/real checks the engine): nobody (listen), the agent (whisper),
    both (barge); the mode changes on the same leg; the leg goes with the dial."""
    from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator

    port, log_path = worker
    behaviour = Behaviour(prompt_seconds=0.1, talk_seconds=30,
                          endpoints={"1001": "answer", "supervise-7": "answer"})
    sim = FreeswitchSimulator([("127.0.0.1", port)], behaviour)
    calls = [await sim.place_call(number) for number in ("7005", "7006")]
    await asyncio.gather(*(call.wait_ended(10) for call in calls))
    await sim.stop()

    def story(lines: list[str]) -> list[str]:
        return [line for line in lines if line.startswith(("bridged", "supervised",
                                                           "unbridged"))]

    modes, rejoin = (story(call.transcript.lines()) for call in calls)
    assert modes == [
        "bridged 1001",
        "supervised supervise-7 heard_by=nobody",
        "supervised supervise-7 heard_by=agent",
        "supervised supervise-7 heard_by=caller,agent",
        "supervised supervise-7 heard_by=nobody",
        "supervised supervise-7 gone",
        "unbridged 1001",
    ]  # fmt: skip
    assert rejoin == [
        "bridged 1001",
        "supervised supervise-7 heard_by=agent",
        "supervised supervise-7 gone",  # joining again replaces the leg
        "supervised supervise-7 heard_by=caller,agent",
        "unbridged 1001",
        "supervised supervise-7 gone",  # the driver ends it once the dial is over
    ]  # fmt: skip
    log = log_path.read_text()
    assert log.count("Supervise ignored") == 1, log  # the one before the dial
    assert "Traceback" not in log, log
