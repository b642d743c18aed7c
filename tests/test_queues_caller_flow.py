"""The caller's experience as a pure flow: no Redis, no engine."""

from __future__ import annotations

from appserver.queues.caller_flow import (
    ANNOUNCE_TIMER,
    MAX_WAIT_TIMER,
    QUEUED_VARIABLE,
    CallerFlow,
    DialFailed,
    Finish,
    Join,
    Leave,
    RuntimeAction,
)
from appserver.queues.flow import QueueingFlow
from appserver.queues.model import QueueConfig, TakenOver
from ivr.calls import (
    AgentAssigned,
    AgentRequest,
    Answer,
    CallInfo,
    CancelTimer,
    Command,
    Dial,
    DialResult,
    Dtmf,
    EndDial,
    Enqueue,
    Event,
    Hangup,
    Hold,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    QueueResult,
    QueueUpdate,
    SetVariable,
    StartMoh,
    StartTimer,
    StopMoh,
    StopPlay,
    TimerFired,
    Transfer,
    Unhold,
)

CALL = CallInfo("call-1", "test", "+15550100", "9999")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**conf: object) -> tuple[CallerFlow, list[RuntimeAction], Clock]:
    actions: list[RuntimeAction] = []
    clock = Clock()
    cfg = QueueConfig("support", **conf)  # type: ignore[arg-type]
    return CallerFlow(cfg, 3, actions.append, clock=clock), actions, clock


def test_start_joins_plays_moh_and_arms_timers() -> None:
    flow, actions, _ = make(moh_class="jazz", max_wait_seconds=300, announce_interval=30)
    assert flow.start(CALL) == [SetVariable(QUEUED_VARIABLE, "support"), StartMoh("jazz"),
                                StartTimer(MAX_WAIT_TIMER, 300.0),
                                StartTimer(ANNOUNCE_TIMER, 30.0)]
    assert actions == [Join("call-1", "support", 3, "+15550100")]


def test_announces_position_and_wait_over_moh() -> None:
    flow, _, _ = make(announce_interval=30)
    flow.start(CALL)
    assert flow.handle(QueueUpdate("support", 4, 150.0, 2)) == []
    cmds = flow.handle(TimerFired(ANNOUNCE_TIMER))
    play = cmds[2]
    assert cmds[:2] == [StartTimer(ANNOUNCE_TIMER, 30.0), StopMoh()] and isinstance(play, Play)
    assert play.prompts == (Prompt("file", "queue/position"), Prompt("number", "4"),
                            Prompt("file", "queue/estimated_wait"), Prompt("number", "2"),
                            Prompt("file", "queue/minutes"))
    assert flow.handle(PlayFinished(play.play_id)) == [StartMoh("default")]
    flow.handle(QueueUpdate("support", 1, 0.0, 2))
    cmds = flow.handle(TimerFired(ANNOUNCE_TIMER))
    assert isinstance(cmds[-1], Play)
    assert cmds[-1].prompts == (Prompt("file", "queue/position"), Prompt("number", "1"))


def test_position_only_when_wait_announcement_is_off() -> None:
    flow, _, _ = make(announce_interval=20, announce_wait=False)
    flow.start(CALL)
    flow.handle(QueueUpdate("support", 2, 600.0, 1))
    play = flow.handle(TimerFired(ANNOUNCE_TIMER))[-1]
    assert isinstance(play, Play) and len(play.prompts) == 2


def test_agent_assigned_dials_and_answered_ends_the_stay() -> None:
    flow, actions, _ = make(announce_interval=30, ring_timeout=25)
    flow.start(CALL)
    flow.handle(QueueUpdate("support", 1, 0, 1))
    play = flow.handle(TimerFired(ANNOUNCE_TIMER))[-1]
    assert isinstance(play, Play)
    cmds = flow.handle(AgentAssigned("support", "ann", "ann", "browser"))
    assert cmds == [StopPlay(play.play_id), StopMoh(), CancelTimer(ANNOUNCE_TIMER),
                    CancelTimer(MAX_WAIT_TIMER), Dial("ann", kind="agent", timeout=25.0)]
    assert flow.handle(Dtmf("0")) == []  # no exit once connecting
    assert flow.handle(DialResult("ann", "answered")) == []
    assert flow.done and flow.result == QueueResult("support", "answered", "ann")
    assert actions[-1] == Finish("call-1")


def test_sip_agent_is_dialled_as_extension_and_no_answer_requeues() -> None:
    flow, actions, clock = make(max_wait_seconds=120, announce_interval=0)
    flow.start(CALL)
    cmds = flow.handle(AgentAssigned("support", "bob", "1001", "sip"))
    assert cmds[-1] == Dial("1001", kind="extension", timeout=20.0)
    clock.now += 50
    assert flow.handle(DialResult("1001", "no_answer")) == [
        StartMoh("default"), StartTimer(MAX_WAIT_TIMER, 70.0)]
    assert actions[-1] == DialFailed("call-1", "bob") and not flow.done
    clock.now += 80
    cmds = flow.handle(AgentAssigned("support", "bob", "1001", "sip"))
    cmds = flow.handle(DialResult("1001", "busy"))  # max wait passed meanwhile: overflow now
    assert cmds[-1] == Hangup() and flow.result == QueueResult("support", "timeout", "timeout")


def test_max_wait_overflows_to_another_queue() -> None:
    flow, actions, _ = make(max_wait_seconds=60, overflow_action="queue",
                            overflow_target="backup")
    flow.start(CALL)
    cmds = flow.handle(TimerFired(MAX_WAIT_TIMER))
    assert cmds[-1] == Enqueue("backup", 3)
    assert actions[-1] == Leave("call-1", "timeout") and flow.done


def test_exit_key_goes_to_the_exit_route() -> None:
    flow, actions, _ = make(exit_key="*", exit_action="extension", exit_target="8000")
    flow.start(CALL)
    assert flow.handle(Dtmf("1")) == []
    cmds = flow.handle(Dtmf("*"))
    assert cmds[-1] == Transfer("8000") and actions[-1] == Leave("call-1", "left")
    assert flow.result == QueueResult("support", "left", "extension:8000")


def test_leave_when_empty_routes_to_a_menu() -> None:
    flow, actions, _ = make(leave_when_empty=True, overflow_action="menu",
                            overflow_target="main")
    flow.start(CALL)
    assert flow.handle(QueueUpdate("support", 1, 0, 2)) == []
    cmds = flow.handle(QueueUpdate("support", 1, 0, 0))
    assert not any(isinstance(c, Hangup | Transfer | Enqueue) for c in cmds)
    assert flow.result == QueueResult("support", "overflow", "menu:main")
    assert actions[-1] == Leave("call-1", "overflow")


def test_runtime_overflow_on_join_does_not_leave_twice() -> None:
    flow, actions, _ = make()
    flow.start(CALL)
    cmds = flow.handle(QueueResult("support", "overflow", "full"))
    assert cmds[-1] == Hangup() and actions == [Join("call-1", "support", 3, "+15550100")]
    assert flow.result == QueueResult("support", "overflow", "full")


def test_caller_hangup_abandons() -> None:
    flow, actions, _ = make()
    flow.start(CALL)
    assert flow.handle(HungUp()) == []
    assert flow.result == QueueResult("support", "abandoned", "hangup")
    assert actions[-1] == Leave("call-1", "abandoned")
    assert flow.handle(AgentAssigned("support", "ann", "ann")) == []  # too late: ignored


class Ivr:
    """A minimal inner flow: answers, enqueues, then records what comes back."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def start(self, call: CallInfo) -> list[Command]:
        return [Answer(), Enqueue("support", 1)]

    def handle(self, event: Event) -> list[Command]:
        self.events.append(event)
        if isinstance(event, QueueResult) and event.detail == "menu:main":
            return [Enqueue("other")]
        self._done = True
        return [Hangup()]


class Factory:
    """The queue runtime's side of QueueingFlow: caller flows for ``configs``, and the
    callers in ``taken`` resume their stay (taken over from a dead worker)."""

    def __init__(self, configs: dict[str, QueueConfig],
                 taken: dict[str, TakenOver] | None = None) -> None:
        self.configs = configs
        self.taken = taken or {}
        self.actions: list[RuntimeAction] = []

    def caller_flow(self, call: CallInfo, enqueue: Enqueue) -> CallerFlow | None:
        cfg = self.configs.get(enqueue.queue)
        return CallerFlow(cfg, enqueue.priority, self.actions.append) if cfg else None

    def resumed_caller(self, call: CallInfo) -> tuple[CallerFlow, TakenOver] | None:
        taken = self.taken.pop(call.call_id, None)
        if taken is None:
            return None
        flow = self.caller_flow(call, Enqueue(taken.queue, taken.priority))
        return (flow, taken) if flow is not None else None

    def callback_caller(self, call: CallInfo) -> tuple[CallerFlow, str] | None:
        queue, _, entry = call.variables.get("callyard_callback", "").partition(":")
        flow = self.caller_flow(call, Enqueue(queue)) if entry else None
        return (flow, entry) if flow is not None else None


def test_queueing_flow_hands_results_back_to_the_inner_flow() -> None:
    factory = Factory({"support": QueueConfig("support", leave_when_empty=True,
                                              overflow_action="menu", overflow_target="main")})
    ivr = Ivr()
    flow = QueueingFlow(ivr, factory)
    assert flow.start(CALL) == [Answer(), SetVariable(QUEUED_VARIABLE, "support"),
                                StartMoh("default")]
    assert not flow.done
    cmds = flow.handle(QueueUpdate("support", 1, 0, 0))
    # The IVR got overflow -> menu:main, then asked for an unknown queue -> failed -> hangs up.
    assert ivr.events == [QueueResult("support", "overflow", "menu:main"),
                          QueueResult("other", "failed", "no such queue")]
    assert cmds[-1] == Hangup() and flow.done


def test_queueing_flow_chains_overflow_queues_and_passes_hangup() -> None:
    factory = Factory({
        "support": QueueConfig("support", max_wait_seconds=10, overflow_action="queue",
                               overflow_target="backup"),
        "backup": QueueConfig("backup", moh_class="backup-moh"),
    })
    ivr = Ivr()
    flow = QueueingFlow(ivr, factory)
    flow.start(CALL)
    cmds = flow.handle(TimerFired(MAX_WAIT_TIMER))
    assert cmds[-1] == StartMoh("backup-moh")
    assert [type(a).__name__ for a in factory.actions] == ["Join", "Leave", "Join"]
    assert flow.handle(HungUp()) == [Hangup()]
    assert ivr.events == [HungUp()] and flow.done


def test_results_after_an_overflow_chain_name_the_queue_the_ivr_asked_for() -> None:
    factory = Factory({
        "support": QueueConfig("support", max_wait_seconds=10, overflow_action="queue",
                               overflow_target="backup"),
        "backup": QueueConfig("backup", exit_key="0", exit_action="menu", exit_target="sales"),
    })
    ivr = Ivr()
    flow = QueueingFlow(ivr, factory)
    flow.start(CALL)
    flow.handle(TimerFired(MAX_WAIT_TIMER))
    flow.handle(Dtmf("0"))
    assert ivr.events == [QueueResult("support", "left", "menu:sales")]


def connected(**conf: object) -> tuple[CallerFlow, list[RuntimeAction]]:
    flow, actions, _ = make(**conf)
    flow.start(CALL)
    flow.handle(AgentAssigned("support", "ann", "ann", "browser"))
    return flow, actions


def test_agent_holds_and_resumes_the_connected_caller() -> None:
    flow, actions = connected(moh_class="jazz")
    assert flow.handle(AgentRequest("hold")) == [Hold("jazz")]
    assert flow.handle(AgentRequest("hold")) == []  # already on hold
    assert flow.handle(AgentRequest("unhold")) == [Unhold()]
    assert flow.handle(AgentRequest("unhold")) == []
    assert not flow.done and actions[-1] == Join("call-1", "support", 3, "+15550100", "")


def test_agent_requests_are_ignored_unless_connected() -> None:
    flow, _, _ = make()
    flow.start(CALL)
    assert flow.handle(AgentRequest("hold")) == []
    assert flow.handle(AgentRequest("transfer", "extension:1002")) == []
    assert flow.phase == "waiting"


def test_blind_transfer_to_an_extension_ends_the_agent_leg_first() -> None:
    flow, actions = connected()
    flow.handle(AgentRequest("hold"))
    assert flow.handle(AgentRequest("transfer", "extension:1002")) == [EndDial()]
    assert flow.handle(AgentRequest("unhold")) == []  # on the way out
    assert not flow.done
    assert flow.handle(DialResult("ann", "answered")) == [Transfer("1002")]
    assert flow.done and flow.result == QueueResult("support", "answered", "ann")
    assert actions[-1] == Finish("call-1")


def test_blind_transfer_with_a_bad_target_is_ignored() -> None:
    flow, _ = connected()
    assert flow.handle(AgentRequest("transfer", "menu:main")) == []
    assert flow.handle(AgentRequest("transfer", "queue:")) == []
    assert flow.handle(DialResult("ann", "answered")) == []
    assert flow.result == QueueResult("support", "answered", "ann")


def test_blind_transfer_to_a_queue_queues_the_caller_again() -> None:
    factory = Factory({"support": QueueConfig("support"),
                       "billing": QueueConfig("billing", moh_class="billing-moh")})
    ivr = Ivr()
    flow = QueueingFlow(ivr, factory)
    flow.start(CALL)
    flow.handle(AgentAssigned("support", "ann", "ann", "browser"))
    assert flow.handle(AgentRequest("transfer", "queue:billing")) == [EndDial()]
    cmds = flow.handle(DialResult("ann", "answered"))
    assert cmds[:2] == [SetVariable(QUEUED_VARIABLE, "billing"), StartMoh("billing-moh")]
    assert not flow.done
    assert [type(a).__name__ for a in factory.actions] == ["Join", "Finish", "Join"]
    assert factory.actions[-1].queue == "billing"  # type: ignore[union-attr]
    assert ivr.events == []  # the IVR hears nothing until the caller's stay is over


def test_the_agent_hanging_up_ends_their_leg_and_the_stay() -> None:
    """Hang up in the console (even with LiveKit unreachable, so its room lingers): the
    agent's leg is ended by the worker, and whatever the dial reports then (the leg may not
    have been up yet) the caller's stay is over, answered, never back in line."""
    for outcome in ("answered", "no_answer"):
        flow, actions = connected()
        assert flow.handle(AgentRequest("hangup")) == [EndDial()]
        assert flow.handle(AgentRequest("hangup")) == []  # once
        assert flow.handle(DialResult("ann", outcome)) == []  # type: ignore[arg-type]
        assert flow.done and flow.result == QueueResult("support", "answered", "ann")
        assert actions[-1] == Finish("call-1")


def test_a_resumed_stay_keeps_what_is_left_of_the_max_wait() -> None:
    flow, actions, _ = make(max_wait_seconds=300, announce_interval=30)
    assert flow.resume(CALL, waited=250.4) == [StartMoh("default"),
                                                StartTimer(MAX_WAIT_TIMER, 50.0),
                                                StartTimer(ANNOUNCE_TIMER, 30.0)]
    assert actions == [] and flow.phase == "waiting"  # no second Join
    late, actions, _ = make(max_wait_seconds=300, overflow_action="hangup")
    assert late.resume(CALL, waited=301.0)[-1] == Hangup()
    assert actions == [Leave("call-1", "timeout")] and late.done


def taken(**fields: object) -> TakenOver:
    values: dict[str, object] = dict(call_id=CALL.call_id, queue="support", state="waiting",
                                     priority=1, joined_ms=0, menu_path="main",
                                     previous_owner="w-dead")
    values.update(fields)
    return TakenOver(**values)  # type: ignore[arg-type]


def test_a_taken_over_caller_resumes_waiting_without_the_inner_flow() -> None:
    """The runtime took the caller over: hold music at once, no Answer, no Join, the inner
    flow not started. Answered, the call is over; any other result starts the inner flow
    from the top (it cannot begin where the caller waits)."""
    factory = Factory({"support": QueueConfig("support", exit_key="*", exit_action="menu",
                                              exit_target="main")},
                      {CALL.call_id: taken()})
    ivr = Ivr()
    flow = QueueingFlow(ivr, factory)
    assert flow.start(CALL) == [StartMoh("default")]
    assert factory.actions == [] and ivr.events == []
    flow.handle(AgentAssigned("support", "ann", "ann", "browser"))
    assert flow.handle(DialResult("ann", "answered")) == [Hangup()]
    assert flow.done and ivr.events == []
    assert [type(a).__name__ for a in factory.actions] == ["Finish"]

    factory.taken[CALL.call_id] = taken()
    ivr = Ivr()
    flow = QueueingFlow(ivr, factory)
    flow.start(CALL)
    assert flow.handle(Dtmf("*")) == [StopMoh(), CancelTimer(ANNOUNCE_TIMER),
                                      CancelTimer(MAX_WAIT_TIMER), Answer(),
                                      SetVariable(QUEUED_VARIABLE, "support"),
                                      StartMoh("default")]  # the inner flow from the top
    assert ivr.events == []


class Resumable(Ivr):
    def __init__(self) -> None:
        super().__init__()
        self.resumed: tuple[str, str] | None = None

    def resume_queued(self, call: CallInfo, queue: str, menu_path: str) -> list[Command]:
        self.resumed = (queue, menu_path)
        return []


def test_a_resumable_inner_flow_gets_the_result_of_a_taken_over_stay() -> None:
    factory = Factory({"support": QueueConfig("support", exit_key="*", exit_action="menu",
                                              exit_target="sales")},
                      {CALL.call_id: taken(menu_path="main/sales")})
    ivr = Resumable()
    flow = QueueingFlow(ivr, factory)
    assert flow.start(CALL) == [StartMoh("default")]
    assert ivr.resumed == ("support", "main/sales")
    flow.handle(Dtmf("*"))
    assert ivr.events == [QueueResult("support", "left", "menu:sales")]
