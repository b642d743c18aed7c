"""One place builds a call's flow: the worker's layers, outermost first, around the app; a
key press goes through each layer once."""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import redis.asyncio as aioredis

from appserver.agents.bridge import BrowserAgentBridge
from appserver.cdr.flow import CdrCalls, CdrFlow
from appserver.cdr.record import CdrRecord
from appserver.queues.flow import QueueingFlow
from appserver.queues.runtime import QueueRuntime
from appserver.worker.pipeline import Pipeline, worker_pipeline
from ivr.calls import CallFlow, CallInfo, Command, Dtmf, Event, Hangup, Play, Prompt

CALL = CallInfo("p1", "test", "+15550100", "9999")


class Echo:
    """An app that answers every key press with a prompt."""

    done = False

    def start(self, call: CallInfo) -> list[Command]:
        return []

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Dtmf) and event.digits == "#":
            self.done = True
            return [Hangup()]
        return [Play("p", (Prompt("file", "beep"),))]


def layers_of(flow: Any) -> list[type]:
    chain = []
    while flow is not None:
        chain.append(type(flow))
        flow = getattr(flow, "inner", None)
    return chain


def worker_flows(records: list[CdrRecord]) -> Pipeline:
    cdrs = CdrCalls(records.append)
    queues = QueueRuntime(aioredis.Redis(), "pipeline-test")  # never started
    return worker_pipeline(lambda call: Echo() if call.called == "9999" else None, cdrs=cdrs,
                           queues=queues, livekit_sip_uri="sip:livekit.invalid")


def test_layers_wrap_the_app_outermost_first() -> None:
    flows = worker_flows([])
    assert layers_of(flows(CALL)) == [CdrFlow, BrowserAgentBridge, QueueingFlow, Echo]
    assert flows(CallInfo("p2", "test", "+15550100", "1234")) is None  # no app takes it


def test_a_key_press_enters_the_cdr_layer_once() -> None:
    records: list[CdrRecord] = []
    flow: CallFlow | None = worker_flows(records)(CALL)
    assert flow is not None
    flow.start(CALL)
    cdr_module = str(Path(sys.modules[CdrFlow.__module__].__file__ or ""))
    entries: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        caller = frame.f_back
        if (event == "call" and frame.f_code.co_filename == cdr_module
                and (caller is None or caller.f_code.co_filename != cdr_module)):
            entries.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        commands = flow.handle(Dtmf("1"))
    finally:
        sys.setprofile(None)
    assert commands == [Play("p", (Prompt("file", "beep"),))]
    assert entries == ["handle"]
    flow.handle(Dtmf("#"))
    assert [r.disposition for r in records] == ["hangup"]
