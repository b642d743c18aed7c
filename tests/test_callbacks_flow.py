"""The callback dialog of a queued caller, as a pure flow: confirm the caller id, key in
another number, unusable caller ids, silence, an agent taking the caller mid-dialog, and
the answered customer's side."""

from __future__ import annotations

from test_callbacks_engines import ToSupport
from test_queues_caller_flow import Factory, make

from appserver.agents.bridge import BrowserAgentBridge
from appserver.agents.sip import sip_address
from appserver.cdr.flow import CdrCalls
from appserver.cdr.record import CdrRecord
from appserver.devkit.demo import QUEUE
from appserver.queues.caller_flow import (
    CALLBACK_PROMPTS,
    CALLBACK_TIMER,
    CALLBACK_VARIABLE,
    MAX_WAIT_TIMER,
    CallbackAnswered,
    RequestCallback,
    announcement,
)
from appserver.queues.flow import CallbackEnd, QueueingFlow, callback_app
from appserver.queues.model import QueueConfig
from appserver.sounds import QUEUE_TEXT, generated
from ivr.calls import (
    AgentAssigned,
    CallInfo,
    Command,
    Dial,
    DialResult,
    Dtmf,
    Hangup,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    QueueResult,
    StartMoh,
    StartTimer,
    TimerFired,
)

# The callback keeps the engine node the caller came in on: it is dialled from there.
CALL = CallInfo("call-1", "asterisk", "+15550100", "9999", node="pbx1:8088")


def plays(cmds: list[Command]) -> list[tuple[str, ...]]:
    return [tuple(f"{p.kind}:{p.value}" for p in c.prompts) for c in cmds if isinstance(c, Play)]


def play_id(cmds: list[Command]) -> str:
    return [c for c in cmds if isinstance(c, Play)][-1].play_id


def test_confirm_the_caller_id_then_goodbye() -> None:
    flow, actions, _ = make(callback_key="5", max_wait_seconds=300)
    flow.start(CALL)
    cmds = flow.handle(Dtmf("5"))
    assert plays(cmds) == [("file:queue/callback_confirm", "digits:15550100",
                            "file:queue/callback_confirm_keys")]
    assert StartTimer(CALLBACK_TIMER, 10.0) in cmds
    cmds = flow.handle(Dtmf("1"))
    assert actions[-1] == RequestCallback("call-1", "+15550100", "asterisk", "pbx1:8088")
    assert plays(cmds) == [("file:queue/callback_registered",)]
    assert flow.handle(TimerFired(MAX_WAIT_TIMER)) == []  # cancelled: no timeout now
    assert flow.handle(PlayFinished(play_id(cmds))) == [Hangup()]
    assert flow.done and flow.result is not None
    assert (flow.result.outcome, flow.result.detail) == ("left", "callback")
    assert flow.handle(HungUp()) == []
    assert len(actions) == 2  # Join, RequestCallback: no Leave (the entry stays)


def test_the_goodbye_still_hears_the_runtimes_answer_to_the_request() -> None:
    """The "we will call you back" goodbye ends the call through its PlayFinished, not with
    Hangup(after_play) as a menu's or voicemail's goodbye does: while it plays, the
    runtime's answer to RequestCallback can still come. A refusal (the entry is gone) fails
    the stay back to the caller's flow, and an agent assigned meanwhile (``assigned``) is
    connected; a flow already done would hear neither, and the caller would hang up with no
    callback registered."""
    flow, _, _ = make(callback_key="5")
    flow.start(CALL)
    flow.handle(Dtmf("5"))
    cmds = flow.handle(Dtmf("1"))
    assert plays(cmds) == [("file:queue/callback_registered",)]
    assert not any(isinstance(c, Hangup) for c in cmds) and not flow.done
    flow.handle(QueueResult("support", "failed", "callback no_entry"))
    assert flow.done and flow.result is not None
    assert (flow.result.outcome, flow.result.detail) == ("failed", "callback no_entry")
    flow, _, _ = make(callback_key="5")
    flow.start(CALL)
    flow.handle(Dtmf("5"))
    flow.handle(Dtmf("1"))
    cmds = flow.handle(AgentAssigned("support", "ann", "ann"))
    assert isinstance(cmds[-1], Dial) and flow.phase == "connecting"


def test_a_taken_over_caller_is_offered_their_own_number() -> None:
    """Finding: a caller another worker took over (``resume``) was asked to key in a number,
    as if they had no caller id."""
    flow, actions, _ = make(callback_key="5", max_wait_seconds=300)
    flow.resume(CALL, waited=20.0)
    cmds = flow.handle(Dtmf("5"))
    assert plays(cmds) == [("file:queue/callback_confirm", "digits:15550100",
                            "file:queue/callback_confirm_keys")]
    flow.handle(Dtmf("1"))
    assert actions[-1] == RequestCallback("call-1", "+15550100", "asterisk", "pbx1:8088")


def test_key_in_another_number() -> None:
    flow, actions, _ = make(callback_key="*")
    flow.start(CALL)
    flow.handle(Dtmf("*"))
    cmds = flow.handle(Dtmf("2"))
    assert plays(cmds) == [("file:queue/callback_enter",)]
    flow.handle(Dtmf("0"))
    flow.handle(Dtmf("2"))  # not "another number" any more: a digit of it
    assert flow.handle(Dtmf("#")) != []  # 2 digits: too short, asked again
    for digit in "5550199":
        flow.handle(Dtmf(digit))
    cmds = flow.handle(Dtmf("#"))
    assert plays(cmds)[-1][1] == "digits:5550199"
    flow.handle(Dtmf("1"))
    assert actions[-1] == RequestCallback("call-1", "5550199", "asterisk", "pbx1:8088")


def test_no_usable_caller_id_asks_for_a_number() -> None:
    flow, _, _ = make(callback_key="5")
    flow.start(CallInfo("call-1", "test", "anonymous", "9999"))
    assert plays(flow.handle(Dtmf("5"))) == [("file:queue/callback_enter",)]


def test_silence_goes_back_to_waiting_at_the_same_place() -> None:
    flow, actions, _ = make(callback_key="5", announce_interval=30)
    flow.start(CALL)
    flow.handle(Dtmf("5"))
    cmds = flow.handle(TimerFired(CALLBACK_TIMER))
    assert StartMoh("default") in cmds and flow.callback_step == ""
    assert [type(a).__name__ for a in actions] == ["Join"]
    assert plays(flow.handle(Dtmf("5")))  # may ask again


def test_an_agent_taking_the_caller_mid_dialog_connects_them() -> None:
    flow, actions, _ = make(callback_key="5")
    flow.start(CALL)
    flow.handle(Dtmf("5"))
    cmds = flow.handle(AgentAssigned("support", "ann", "ann"))
    assert isinstance(cmds[-1], Dial) and flow.phase == "connecting"
    assert flow.handle(Dtmf("1")) == []  # the dialog is over
    assert not any(isinstance(a, RequestCallback) for a in actions)


def test_the_announcement_offers_the_key() -> None:
    config = QueueConfig("support", callback_key="5")
    assert announcement(2, 0, config)[-2:] == (Prompt("file", "queue/callback_offer"),
                                               Prompt("digits", "5"))
    quiet = QueueConfig("support", callback_key="5", callback_announce=False)
    assert Prompt("file", "queue/callback_offer") not in announcement(2, 0, quiet)


def test_the_customer_is_greeted_then_connected() -> None:
    flow, actions, _ = make(callback_key="5")
    cmds = flow.start_callback(CallInfo("leg-1", "test", "0000000000", "9999"), "call-1")
    assert actions == [CallbackAnswered("leg-1", "call-1")]
    assert plays(cmds) == [("file:queue/callback_hello",)]
    cmds = flow.handle(AgentAssigned("support", "ann", "ann"))
    assert isinstance(cmds[-1], Dial) and cmds[-1].target == "ann"


def test_callback_prompts_are_in_the_demo_set_and_captions() -> None:
    """Every prompt of the dialog is a sound ``callyard sounds`` speaks (and a softphone
    caption); the demo's support queue offers callbacks."""
    assert set(CALLBACK_PROMPTS.values()) <= set(QUEUE_TEXT)
    assert set(CALLBACK_PROMPTS.values()) <= set(generated())
    assert QUEUE.callback_key == "5"


def test_a_callbacks_customer_joins_the_callbacks_room() -> None:
    """The agent entered the room of the callback (the caller's call id) on accepting: the
    customer's new channel is dialled into that room, not one of its own."""
    flow, _, _ = make(callback_key="5")
    bridge = BrowserAgentBridge(flow, "sip:livekit.example")
    bridge.start(CallInfo("leg-1", "test", "0000000000", "9999",
                          variables={CALLBACK_VARIABLE: "support:call-1"}))
    cmds = bridge.handle(AgentAssigned("support", "ann", "ann"))
    dial = cmds[-1]
    assert isinstance(dial, Dial)
    assert dial.target == sip_address("call-1", "sip:livekit.example")


def test_a_callbacks_customer_skips_the_app_and_hangs_up_if_the_callback_is_gone() -> None:
    factory = Factory({"support": QueueConfig("support", callback_key="5")})
    customer = CallInfo("leg-1", "test", "0000000000", "9999",
                        variables={CALLBACK_VARIABLE: "support:call-1"})
    app = callback_app(customer)
    assert app is not None and callback_app(CALL) is None
    flow = QueueingFlow(app, factory)
    assert plays(flow.start(customer)) == [("file:queue/callback_hello",)]
    assert factory.actions == [CallbackAnswered("leg-1", "call-1")]
    # The runtime found no entry (it failed meanwhile): the call ends, no menu is played.
    cmds = flow.handle(QueueResult("support", "failed", "callback gone"))
    assert cmds[-1] == Hangup() and flow.done


def test_cdrs_say_who_asked_for_a_callback_and_which_call_is_one() -> None:
    out: list[CdrRecord] = []
    factory = Factory({"support": QueueConfig("support", callback_key="5")})
    cdrs = CdrCalls(out.append)
    caller = CallInfo("call-1", "asterisk", "+15550100", "2000")
    flow = cdrs.wrap(QueueingFlow(ToSupport(), factory, observer=cdrs), caller)
    flow.start(caller)
    flow.handle(Dtmf("5"))
    cmds = flow.handle(Dtmf("1"))
    flow.handle(PlayFinished(play_id(cmds)))
    [asked] = out
    assert (asked.queue, asked.extra["callback_to"]) == ("support", "+15550100")
    customer = CallInfo("leg-1", "asterisk", "0000000000", "s",
                        variables={CALLBACK_VARIABLE: "support:call-1"})
    flow = cdrs.wrap(QueueingFlow(CallbackEnd(), factory, observer=cdrs), customer)
    flow.start(customer)
    flow.handle(AgentAssigned("support", "ann", "ann"))
    flow.handle(DialResult("ann", "answered"))
    called_back = out[1]
    assert (called_back.queue, called_back.agent, called_back.disposition,
            called_back.extra["callback_of"]) == ("support", "ann", "answered", "call-1")
