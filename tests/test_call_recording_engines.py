"""Call recording at the driver level, on both simulators: StartRecording before a Dial
begins writing when the parties are bridged (RecordingStarted), Pause/Resume mark the file,
StopRecording closes it (RecordingStopped); the file has the recorded length. The
FreeSWITCH worker (a subprocess) loads this module as its flow factory."""

from __future__ import annotations

import contextlib
import wave
from collections.abc import AsyncIterator
from pathlib import Path

from test_freeswitch_e2e import FAST, free_port, stop_worker
from test_freeswitch_e2e import start_worker as start_fs_worker

from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.behaviour import Behaviour
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator
from appserver.settings import AriNode
from ivr import calls as c

STEP = 0.4
TALK = 2.0  # the dialled party hangs up after this


class RecordedDial:
    """Answer, record, dial 1001; pause then resume the recording; once the party hung up,
    stop it; say what the engine reported (``result/<event>``); hang up."""

    def __init__(self) -> None:
        self.steps: list[c.Command] = [c.PauseRecording(), c.ResumeRecording()]
        self._done = False
        self.name = ""

    @property
    def done(self) -> bool:
        return self._done

    def start(self, call: c.CallInfo) -> list[c.Command]:
        self.name = f"recording-test-{call.call_id}"
        return [c.Answer(), c.StartRecording(self.name), c.Dial("1001"),
                c.StartTimer("step", STEP)]

    def handle(self, event: c.Event) -> list[c.Command]:
        if isinstance(event, c.TimerFired) and self.steps:
            return [self.steps.pop(0), c.StartTimer("step", STEP)]
        if isinstance(event, c.RecordingStarted):
            return [_say("recording-started")]
        if isinstance(event, c.DialResult):
            return [c.StopRecording()]
        if isinstance(event, c.RecordingStopped):
            return [_say(f"recording-stopped-{round(event.seconds)}")]
        if isinstance(event, c.PlayFinished) and event.play_id.startswith("recording-stopped"):
            self._done = True
            return [c.Hangup()]
        if isinstance(event, c.HungUp):
            self._done = True
        return []


def _say(what: str) -> c.Play:
    return c.Play(what, (c.Prompt("file", f"result/{what}"),))


class PausedBeforeTheBridge(RecordedDial):
    """The recording is paused before anyone answered (there is no bridge to record yet),
    and stays paused: the pause must hold once the bridge's recording begins."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = []

    def start(self, call: c.CallInfo) -> list[c.Command]:
        answer, record, dial, timer = super().start(call)
        return [answer, record, c.PauseRecording(), dial, timer]


def factory(info: c.CallInfo) -> c.CallFlow | None:
    flows = {"7100": RecordedDial, "7101": PausedBeforeTheBridge}
    flow = flows.get(info.called)
    return flow() if flow is not None else None


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def recorded_call(call: SimulatedCall, recordings: Path) -> None:
    await call.wait_ended(15)
    lines = call.transcript.lines()
    name = f"recording-test-{call.call_id}"
    started = lines.index(f"recording {name}.wav started" if f"recording {name}.wav started"
                          in lines else f"recording {name} started")
    assert lines.index("bridged 1001") < started, lines  # from the bridge on
    paused = next(i for i, line in enumerate(lines) if line.endswith(" paused"))
    resumed = next(i for i, line in enumerate(lines) if line.endswith(" resumed"))
    assert started < paused < resumed, lines
    assert "prompt_started file:result/recording-started" in lines
    assert any(line.startswith("prompt_started file:result/recording-stopped-")
               for line in lines), lines
    assert (recordings / f"{name}.wav").is_file()


async def test_call_recording_on_the_freeswitch_simulator(tmp_path: Path,
                                                          redis_url: str) -> None:
    port = free_port()
    worker = start_fs_worker(port, redis_url,
                             CALLYARD_APPS="test_call_recording_engines:factory",
                             CALLYARD_FREESWITCH_RECORDINGS_DIR=str(tmp_path))
    sim = FreeswitchSimulator([("127.0.0.1", port)], Behaviour(**{**FAST, "talk_seconds": TALK}))
    try:
        call = await sim.place_call("7100")
        await recorded_call(call, tmp_path)
        # FreeSWITCH masks (silence) while paused: the file covers the whole conversation
        length = wav_seconds(tmp_path / f"recording-test-{call.call_id}.wav")
        assert abs(length - TALK) < 0.5
        assert "prompt_started file:result/recording-stopped-2" in call.transcript.lines()
    finally:
        await sim.stop()
        stop_worker(worker)


@contextlib.asynccontextmanager
async def asterisk(recordings: Path, redis_client: object) -> AsyncIterator[AriSimulator]:
    """The ARI simulator (1001 answers and talks for TALK s) and a worker running
    :func:`factory`."""
    async with AriSimulator(sounds=SoundCatalog(default_seconds=0.1), recording_dir=recordings,
                            endpoints=[SimEndpoint("PJSIP", "1001", talk_seconds=TALK)]) as sim:
        worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                         password=sim.password)], factory, redis=redis_client)
        await worker.start()
        try:
            await worker.wait_connected()
            yield sim
        finally:
            await worker.stop()


async def test_call_recording_on_the_asterisk_simulator(tmp_path: Path, redis_client: object
                                                        ) -> None:
    async with asterisk(tmp_path, redis_client) as sim:
        call = await sim.place_call("7100")
        await recorded_call(call, tmp_path)
        # Asterisk writes nothing while paused: the file is the conversation less the pause
        length = wav_seconds(tmp_path / f"recording-test-{call.call_id}.wav")
        assert abs(length - (TALK - STEP)) < 0.5


async def test_a_pause_before_the_bridge_holds_on_the_asterisk_simulator(
        tmp_path: Path, redis_client: object) -> None:
    """Finding: ARI records a bridge, which exists only once the agent answers; a pause
    asked before that was dropped, and the whole conversation was recorded."""
    async with asterisk(tmp_path, redis_client) as sim:
        call = await sim.place_call("7101")
        await call.wait_ended(15)
        lines = call.transcript.lines()
        name = f"recording-test-{call.call_id}"
        started = lines.index(f"recording {name} started")
        assert lines[started + 1] == f"recording {name} paused", lines
        assert wav_seconds(tmp_path / f"{name}.wav") < 0.3  # nothing of the talk
