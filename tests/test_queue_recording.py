"""Call recording per queue: the caller flow (never / always / on demand, the announcement,
the agent's pause and resume) and end to end through Redis (the agent's console request),
the Asterisk worker and the ARI simulator, to the CDR's recordings."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from test_asterisk_queue import EnqueueFlow, until
from test_queues_caller_flow import CALL, make

from appserver.asterisk.worker import AsteriskWorker
from appserver.cdr.flow import CdrCalls
from appserver.cdr.record import CdrRecord
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.queues.agent_control import AgentControl
from appserver.queues.caller_flow import QUEUED_VARIABLE
from appserver.queues.model import AgentConfig, Member, QueueConfig, QueueConfigError
from appserver.queues.runtime import QueueRuntime
from appserver.queues.store import QueueError, QueueStore
from appserver.settings import AriNode
from appserver.worker.pipeline import worker_pipeline
from ivr.calls import (
    AgentAssigned,
    AgentRequest,
    Dial,
    DialResult,
    PauseRecording,
    Play,
    PlayFinished,
    Prompt,
    ResumeRecording,
    StartMoh,
    StartRecording,
    StopRecording,
)

NAME = "recording-support-call-1"


def test_always_records_from_the_agent_and_stops_after_the_call() -> None:
    flow, _, _ = make(recording="always")
    flow.start(CALL)
    cmds = flow.handle(AgentAssigned("support", "ann", "ann"))
    assert cmds[-2:] == [StartRecording(NAME), Dial("ann", kind="agent", timeout=20.0)]
    assert flow.handle(AgentRequest("record", "pause")) == [PauseRecording()]
    assert flow.handle(AgentRequest("record", "pause")) == []  # already paused
    assert flow.handle(AgentRequest("record", "resume")) == [ResumeRecording()]
    assert flow.handle(AgentRequest("record", "stop")) == []  # always: not the agent's call
    assert flow.handle(DialResult("ann", "answered"))[0] == StopRecording()


def test_on_demand_waits_for_the_agent() -> None:
    flow, _, _ = make(recording="on_demand")
    flow.start(CALL)
    assert StartRecording(NAME) not in flow.handle(AgentAssigned("support", "ann", "ann"))
    assert flow.handle(AgentRequest("record", "pause")) == []  # nothing recording yet
    assert flow.handle(AgentRequest("record", "start")) == [StartRecording(NAME)]
    assert flow.handle(AgentRequest("record", "stop")) == [StopRecording()]
    # Started again: a file of its own (it used to overwrite the first take).
    assert flow.handle(AgentRequest("record", "start")) == [StartRecording(NAME + "-2")]
    assert flow.handle(AgentRequest("record", "stop")) == [StopRecording()]
    assert flow.handle(AgentRequest("record", "start")) == [StartRecording(NAME + "-3")]


def test_never_ignores_the_agent() -> None:
    flow, _, _ = make()
    flow.start(CALL)
    assert StartRecording(NAME) not in flow.handle(AgentAssigned("support", "ann", "ann"))
    assert flow.handle(AgentRequest("record", "start")) == []


def test_the_announcement_plays_as_the_caller_joins_then_the_music() -> None:
    flow, _, _ = make(recording="always", recording_announcement="file:demo/recorded")
    cmds = flow.start(CALL)
    play = cmds[1]
    assert isinstance(play, Play) and play.prompts == (Prompt("file", "demo/recorded"),)
    assert StartMoh("default") not in cmds and cmds[0].name == QUEUED_VARIABLE  # type: ignore[union-attr]
    assert flow.handle(PlayFinished(play.play_id)) == [StartMoh("default")]
    never, _, _ = make(recording_announcement="file:demo/recorded")  # not recorded: not said
    assert StartMoh("default") in never.start(CALL)


def test_bad_modes_are_refused() -> None:
    with pytest.raises(QueueConfigError, match="recording 'sometimes'"):
        QueueConfig("support", recording="sometimes")  # type: ignore[arg-type]


async def test_agent_pauses_and_resumes_through_redis_on_asterisk(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("ann", kind="sip", extension="1001"))
    await store.sync_queue(QueueConfig(name="support", wrapup_seconds=0, recording="always"),
                           [Member("ann")])
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1), recording_dir=tmp_path,
                       endpoints=[SimEndpoint("PJSIP", "1001", talk_seconds=2.0)])
    await sim.start()
    records: list[CdrRecord] = []
    queues = QueueRuntime(redis_client, "asterisk-rec-test", tick_seconds=0.05)
    factory = worker_pipeline(lambda info: EnqueueFlow(), cdrs=CdrCalls(records.append),
                              queues=queues, livekit_sip_uri="sip:livekit.invalid")
    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], factory, redis=redis_client)
    await queues.start(worker.deliver)
    await worker.start()
    control = AgentControl(store)
    try:
        await worker.wait_connected()
        with pytest.raises(QueueError, match="not connected to a caller"):
            await control.record("ann", "pause")
        call = await sim.place_call("9999", caller="+15550401")
        await call.transcript.wait_for(lambda e: e.kind == "moh")
        await control.login("ann")
        await call.transcript.wait_for(lambda e: e.detail.endswith(" started"))
        await asyncio.sleep(0.3)
        await control.record("ann", "pause")
        await call.transcript.wait_for(lambda e: e.detail.endswith(" paused"))
        await asyncio.sleep(0.5)
        await control.record("ann", "resume")
        await call.transcript.wait_for(lambda e: e.detail.endswith(" resumed"))
        await call.wait_ended(10)
        await until(lambda: len(records) == 1)
        [recording] = records[0].extra["recordings"]
        assert recording["name"] == f"recording-support-{call.call_id}"
        assert recording["queue"] == "support"
        assert 1.0 <= recording["seconds"] <= 2.5  # the worker's view (the CDR writer
        # replaces it with the file's length, see test_recordings)
        with wave.open(str(tmp_path / f"{recording['name']}.wav")) as w:
            assert 1.2 <= w.getnframes() / w.getframerate() <= 1.8  # Asterisk: no pause
    finally:
        await worker.stop()
        await queues.stop()
        await sim.stop()
