"""CdrFlow: one record per call, with what happened, for every way a call can end."""

from __future__ import annotations

import gc
import weakref

import pytest
from test_queues_caller_flow import Factory

from appserver.cdr.flow import CdrCalls, CdrFlow
from appserver.cdr.record import CdrRecord
from appserver.queues.flow import QueueingFlow
from appserver.queues.model import QueueConfig
from ivr.calls import (
    AgentAssigned,
    AgentRequest,
    Answer,
    Answered,
    CallFlow,
    CallInfo,
    Command,
    Dial,
    DialResult,
    Dtmf,
    EndDial,
    Enqueue,
    Event,
    Hangup,
    HungUp,
    Play,
    Prompt,
    QueueResult,
    QueueUpdate,
    SetVariable,
    Transfer,
    TransferResult,
)

CALL = CallInfo("c-1", "asterisk", "+15550100", "9999", node="pbx1:8088")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """Answers, enters menus main -> sales, then does what the digit says."""

    def __init__(self) -> None:
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), SetVariable("ivr_menu", "main"), SetVariable("ivr_menu_path", "main")]

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Dtmf):
            if event.digits == "1":
                return [SetVariable("ivr_menu", "sales"),
                        SetVariable("ivr_menu_path", "main/sales")]
            if event.digits == "0":
                self._done = True
                return [Transfer("1000")]
            if event.digits == "9":
                return [Enqueue("support")]
            if event.digits == "5":
                return [Dial("1001")]
            if event.digits == "#":
                self._done = True
                return [Hangup("NORMAL_CLEARING")]
            if event.digits == "*":  # the goodbye, and the end once it has played
                self._done = True
                return [Play("bye", (Prompt("file", "bye"),), ""),
                        Hangup("NORMAL_CLEARING", after_play="bye")]
            if event.digits == "x":
                raise RuntimeError("boom")
            if event.digits == "q":
                self._done = True  # done without a terminal command
                return []
        if isinstance(event, QueueResult | DialResult):
            self._done = True
            return [Hangup()]
        if isinstance(event, HungUp):
            self._done = True
        return []


def run(inner: CallFlow | None = None) -> tuple[CdrFlow, list[CdrRecord], Clock]:
    out: list[CdrRecord] = []
    clock = Clock()
    flow = CdrFlow(inner or Scripted(), CALL, out.append, clock=clock)
    flow.start(CALL)
    return flow, out, clock


def test_caller_hangs_up_in_a_menu() -> None:
    flow, out, clock = run()
    clock.now += 1
    flow.handle(Answered())
    flow.handle(Dtmf("1"))
    clock.now += 10
    assert out == []
    flow.handle(HungUp("NORMAL_CLEARING"))
    flow.handle(HungUp("NORMAL_CLEARING"))  # a second HungUp changes nothing
    [r] = out
    assert (r.call_id, r.engine, r.node, r.caller, r.called) == (
        "c-1", "asterisk", "pbx1:8088", "+15550100", "9999")
    assert r.answered_at == r.started_at + 1 and r.ended_at == r.started_at + 11
    assert r.menu_path == ("main", "sales")
    assert (r.disposition, r.hangup_cause, r.queue, r.wait_seconds) == (
        "hangup", "NORMAL_CLEARING", None, None)


def test_transfer_and_flow_hangup_end_the_record() -> None:
    flow, out, _ = run()
    flow.handle(Dtmf("0"))
    assert out == []  # the engine has not taken the transfer yet
    flow.handle(TransferResult("1000", ok=True))
    flow.handle(HungUp())  # the driver may still deliver it: no second record
    assert [(r.disposition, r.extra) for r in out] == [("transferred", {"transfer_to": "1000"})]
    flow, out, _ = run()
    flow.handle(Dtmf("0"))
    flow.handle(HungUp("NORMAL_CLEARING"))  # the caller left before the engine answered
    assert [(r.disposition, r.extra) for r in out] == [("transferred", {"transfer_to": "1000"})]
    flow, out, _ = run()
    flow.handle(Dtmf("#"))
    assert [(r.disposition, r.hangup_cause) for r in out] == [("hangup", "NORMAL_CLEARING")]


def test_a_hangup_after_the_goodbye_is_recorded_when_the_call_ends() -> None:
    """Hangup(after_play): the engine hangs up as the goodbye ends, so the record's end is
    the call's (its HungUp), not the moment the flow asked."""
    flow, out, clock = run()
    flow.handle(Dtmf("*"))
    assert out == [] and flow.done
    clock.now += 2.5  # the goodbye plays
    flow.handle(HungUp("NORMAL_CLEARING"))
    [r] = out
    assert r.ended_at == r.started_at + 2.5
    assert (r.disposition, r.hangup_cause) == ("hangup", "NORMAL_CLEARING")
    flow, out, clock = run()
    flow.handle(Dtmf("*"))
    clock.now += 1
    flow.handle(HungUp("ORIGINATOR_CANCEL"))  # the caller left during the goodbye
    assert [(r.disposition, r.hangup_cause) for r in out] == [("hangup", "NORMAL_CLEARING")]


def test_flow_error_is_a_failed_record_and_the_error_propagates() -> None:
    flow, out, _ = run()
    with pytest.raises(RuntimeError):
        flow.handle(Dtmf("x"))
    [r] = out
    assert r.disposition == "failed" and r.extra["error"] == "RuntimeError: boom"


def test_flow_done_without_hangup_is_recorded_once() -> None:
    flow, out, _ = run()
    flow.handle(Dtmf("q"))
    flow.handle(HungUp())
    assert [r.disposition for r in out] == ["hangup"]


def test_dial_answered_and_pending_dial_keeps_the_call_open() -> None:
    flow, out, _ = run()
    flow.handle(Dtmf("5"))
    assert out == []
    flow.handle(DialResult("1001", "answered"))
    assert [r.disposition for r in out] == ["answered"]


def test_enqueue_without_queue_runtime() -> None:
    flow, out, clock = run()
    flow.handle(Dtmf("9"))
    clock.now += 2
    flow.handle(QueueResult("support", "failed", "no queue runtime"))
    [r] = out
    assert (r.queue, r.disposition, r.wait_seconds) == ("support", "failed", 2.0)


def queued(**conf: object) -> tuple[CdrFlow, list[CdrRecord], Clock]:
    out: list[CdrRecord] = []
    factory = Factory({"support": QueueConfig("support", **conf)})  # type: ignore[arg-type]
    cdrs = CdrCalls(out.append)
    flow = cdrs.wrap(QueueingFlow(Scripted(), factory, observer=cdrs), CALL)
    clock = Clock()
    flow.clock = clock
    flow.start(CALL)
    flow.handle(Dtmf("9"))
    return flow, out, clock


def test_queue_answered_by_an_agent() -> None:
    flow, out, clock = queued()
    clock.now += 3
    flow.handle(QueueUpdate("support", 1, 0.0, 2))
    clock.now += 4
    cmds = flow.handle(AgentAssigned("support", "alice", "alice", "browser"))
    assert any(isinstance(c, Dial) for c in cmds)
    clock.now += 60  # talking
    flow.handle(DialResult("alice", "answered"))  # the agent hung up: the IVR hangs up
    [r] = out
    assert (r.queue, r.agent, r.disposition, r.wait_seconds) == ("support", "alice",
                                                                  "answered", 7.0)


def test_a_caller_the_agent_blind_transfers_keeps_the_agent_on_the_record() -> None:
    """Seen on every engine target: the agent took the caller, then blind-transferred them
    from the console; the CDR said ``transferred`` with no agent - who handled the call was
    lost."""
    flow, out, clock = queued()
    flow.handle(AgentAssigned("support", "alice", "alice", "browser"))
    clock.now += 30
    assert any(isinstance(c, EndDial) for c in flow.handle(AgentRequest("transfer",
                                                                        "extension:1000")))
    assert any(isinstance(c, Transfer) for c in flow.handle(DialResult("alice", "answered")))
    flow.handle(TransferResult("1000", ok=True))
    [r] = out
    assert (r.queue, r.agent, r.disposition) == ("support", "alice", "transferred")


def test_caller_abandons_while_waiting() -> None:
    flow, out, clock = queued()
    clock.now += 12
    flow.handle(HungUp("NORMAL_CLEARING"))
    [r] = out
    assert (r.queue, r.agent, r.disposition, r.wait_seconds) == ("support", None,
                                                                  "abandoned", 12.0)


def test_agent_no_answer_then_caller_hangs_up_on_the_next_agent() -> None:
    flow, out, clock = queued()
    clock.now += 2
    flow.handle(AgentAssigned("support", "bob", "bob"))
    clock.now += 20
    flow.handle(DialResult("bob", "no_answer"))
    clock.now += 5
    flow.handle(AgentAssigned("support", "alice", "alice"))
    clock.now += 30
    flow.handle(HungUp())  # while talking to alice
    [r] = out
    assert (r.agent, r.disposition, r.wait_seconds) == ("alice", "answered", 27.0)


def test_queue_overflow_hangup_from_the_queue() -> None:
    flow, out, clock = queued(max_wait_seconds=30, overflow_action="hangup")
    clock.now += 30
    from appserver.queues.caller_flow import MAX_WAIT_TIMER
    from ivr.calls import TimerFired

    cmds = flow.handle(TimerFired(MAX_WAIT_TIMER))
    assert cmds[-1] == Hangup()
    [r] = out
    assert (r.queue, r.disposition, r.wait_seconds) == ("support", "overflow", 30.0)


def test_record_fields_round_trip_and_bad_entries_are_rejected() -> None:
    flow, out, _ = queued()
    flow.handle(HungUp())
    [r] = out
    assert CdrRecord.from_fields(r.to_fields()) == r
    bad = r.to_fields()
    for key, value, message in [("engine", "test", "engine"), ("disposition", "x", "dispos"),
                                ("started_at", "", "started_at"), ("menu_path", "{", "JSON"),
                                ("wait_seconds", "-1", "negative")]:
        with pytest.raises(ValueError, match=message):
            CdrRecord.from_fields({**bad, key: value})


def test_a_queued_call_leaves_no_reference_cycle() -> None:
    """Thousands of calls a second: each call's flows must go with the call, not wait for a
    full garbage collection (the queueing layer reports to the worker's CdrCalls, which
    lets go of the call's recorder when the call ends)."""
    gc.collect()
    gc.disable()
    try:
        flow, out, _ = queued()
        flow.handle(AgentAssigned("support", "ann", "ann"))
        flow.handle(DialResult("ann", "answered"))
        assert out and out[0].disposition == "answered"
        recorder = weakref.ref(flow)
        del flow
        assert recorder() is None
    finally:
        gc.enable()


def test_a_refused_transfer_is_not_recorded_as_one() -> None:
    flow, out, clock = run()
    flow.handle(Dtmf("0"))
    clock.now += 1
    flow.handle(TransferResult("1000", ok=False, cause="HTTP 412"))
    # The flow is done without another command: the driver hangs up for it.
    [r] = out
    assert (r.disposition, r.hangup_cause, r.extra) == ("hangup", "NORMAL_CLEARING", {})
