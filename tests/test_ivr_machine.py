"""The IVR state machine: every action and setting, driven by ivr.testing.FlowHarness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, time
from types import MappingProxyType

import pytest

from ivr.calls import (
    ALL_KEYS,
    Answer,
    CallInfo,
    CancelTimer,
    Dial,
    DialResult,
    Dtmf,
    Enqueue,
    Hangup,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    QueueResult,
    QueueUpdate,
    SetVariable,
    StartTimer,
    StopPlay,
    TimerFired,
    Transfer,
)
from ivr.compile import MenuSet
from ivr.machine import MAX_IDLE_HOPS, IvrCall
from ivr.model import (
    Action,
    ClosureDef,
    HoursDef,
    Menu,
    MenuDef,
    OptionDef,
    ScheduleDef,
)
from ivr.testing import ContractViolation, FlowHarness, build_menuset

MAIN = MenuDef(
    "main",
    greeting=("file:ivr/welcome",),
    invalid_prompt=("file:ivr/invalid",),
    timeout_prompt=("file:ivr/timeout",),
    first_digit_timeout=5,
    inter_digit_timeout=2,
    max_digits=2,
    max_retries=2,
    exhausted_action="enqueue",
    exhausted_target="operator",
    options=(
        OptionDef("1", "submenu", "sales", ("file:ivr/to-sales",)),
        OptionDef("12", "enqueue", "support:5"),
        OptionDef("2", "dial", "200"),
        OptionDef("3", "transfer", "+15550199"),
        OptionDef("4", "play", "", ("file:ivr/hours",)),
        OptionDef("5", "set", "lang=fr", ("tts:Langue {{ vars.lang }} pour {{ caller }}",)),
        OptionDef("6", "repeat"),
        OptionDef("7", "hangup", "", ("file:ivr/bye",)),
        OptionDef("8", "dial", "300"),
        OptionDef("*", "back"),
        OptionDef("0", "main"),
    ),
)
SALES = MenuDef(
    "sales",
    greeting=("file:ivr/sales",),
    exhausted_action="back",
    max_retries=0,
    options=(
        OptionDef("0", "back"),
        OptionDef("9", "main"),
        OptionDef("1", "submenu", "tech"),
    ),
)
TECH = MenuDef(
    "tech",
    greeting=("file:ivr/tech",),
    schedule="office",
    closed_action="submenu",
    closed_target="closed",
    holiday_action="transfer",
    holiday_target="+15550000",
    options=(OptionDef("1", "enqueue", "support"),),
)
CLOSED = MenuDef("closed", greeting=("file:ivr/closed",), max_retries=0)
OFFICE = ScheduleDef(
    "office",
    "America/New_York",
    tuple(HoursDef(d, time(9), time(17)) for d in range(7)),
    (ClosureDef("Christmas", date(2026, 12, 25), date(2026, 12, 25)),),
)
EXTENSIONS = {
    "9999": ("menu", "main"),
    "200": ("user", "alice"),
    "300": ("agent", "bob"),
    "400": ("queue", "support"),
    "500": ("menu", "tech"),
}
OPEN_TIME = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # Monday 11:00 EDT


def menuset(*menus: MenuDef) -> MenuSet:
    return build_menuset(
        menus or (MAIN, SALES, TECH, CLOSED),
        extensions=EXTENSIONS,
        queues={"support", "operator"},
        schedules=[OFFICE],
    )


MS = menuset()


def call(
    number: str = "9999", at: datetime = OPEN_TIME, ms: MenuSet = MS, **kw: object
) -> FlowHarness:
    flow = ms.flow_for(number, clock=lambda: at)
    assert flow is not None
    h = FlowHarness(flow, **kw)  # type: ignore[arg-type]
    h.start()
    return h


def in_menu(h: FlowHarness) -> str | None:
    return h.flow.menu  # type: ignore[attr-defined]


def last_play(h: FlowHarness) -> Play:
    return [c for c in h.commands if isinstance(c, Play)][-1]


def after(h: FlowHarness, fn: Callable[[], object]) -> list[object]:
    n = len(h.commands)
    fn()
    return list(h.commands[n:])


# ---------------------------------------------------------------- start, greeting, timers


def test_start_answers_sets_path_and_plays_the_greeting() -> None:
    h = call()
    assert h.commands == [
        Answer(),
        SetVariable("ivr_menu", "main"),
        SetVariable("ivr_menu_path", "main"),
        Play("ivr1", (Prompt("file", "ivr/welcome"),), ALL_KEYS, "en"),
    ]
    # The first-digit timer starts when the greeting has played out.
    assert after(h, lambda: h.advance(1)) == [StartTimer("ivr.timer2", 5.0)]


def test_unknown_number_has_no_flow_and_machine_refuses_unknown_menu() -> None:
    assert MS.flow_for("123") is None
    with pytest.raises(ValueError, match="menu 'nope' is not in menu set v1"):
        IvrCall(MS, "nope")


def test_start_twice_and_events_before_start_are_ignored() -> None:
    flow = IvrCall(MS, "main")
    assert flow.handle(Dtmf("1")) == []
    assert flow.start(CallInfo("c", "test", "1", "2"))[0] == Answer()
    assert flow.start(CallInfo("c", "test", "1", "2")) == []


def test_barge_in_stops_the_greeting_and_counts_as_input() -> None:
    h = call()
    h.advance(0.5)
    cmds = after(h, lambda: h.press("7"))
    assert cmds[0] == StopPlay("ivr1")
    assert cmds[1] == Play("ivr2", (Prompt("file", "ivr/bye"),), "", "en")
    assert cmds[2] == Hangup(after_play="ivr2")  # the goodbye plays out, then the call ends
    assert h.played == ["file:ivr/welcome", "file:ivr/bye"]
    assert h.flow.done


def test_stale_play_finished_and_timer_fired_are_ignored() -> None:
    h = call()
    h.press("4")  # barge-in: ivr1 stopped, the hours prompt plays as ivr2
    assert h.flow.handle(PlayFinished("ivr1", "done")) == []
    assert h.flow.handle(TimerFired("ivr.timer999")) == []
    assert h.flow.handle(PlayFinished("nope")) == []
    h.advance(1)
    assert isinstance(h.commands[-1], StartTimer)


# ---------------------------------------------------------------- digit collection


def test_prefix_option_resolves_after_inter_digit_timeout() -> None:
    h = call()
    h.advance(1)
    h.press("1")  # "1" is also a prefix of "12": wait
    assert isinstance(h.commands[-1], StartTimer) and h.commands[-1].seconds == 2.0
    h.advance(1.9)
    assert in_menu(h) == "main"
    h.advance(0.1)
    assert h.played[-1] == "file:ivr/to-sales"  # announced, not interruptible
    h.press("0")  # ignored during the announcement
    h.advance(1)
    assert in_menu(h) == "sales"
    assert h.variables["ivr_menu_path"] == "main/sales"


def test_prefix_option_resolves_with_terminator_at_once() -> None:
    h = call()
    h.press("1#")
    assert h.played[-1] == "file:ivr/to-sales"


def test_longer_option_resolves_when_complete() -> None:
    h = call()
    h.advance(1)
    h.press("1")
    h.press("2")
    assert h.terminal == Enqueue("support", 5)
    assert h.commands[-2] == CancelTimer("ivr.timer3")


def test_digits_in_one_event_and_type_ahead_into_the_next_menu() -> None:
    h = call()
    h.press("12")
    assert h.terminal == Enqueue("support", 5)
    h2 = call(number="500")  # tech: option 1 enqueues
    h2.press("1")
    assert h2.terminal == Enqueue("support", 0)
    h3 = call()
    h3.press("1#")
    h3.advance(1)  # into sales; "1" there goes to tech
    h3.press("1")
    assert in_menu(h3) == "tech"


def test_unmatched_entry_waits_for_more_digits_then_is_invalid() -> None:
    h = call()
    h.advance(1)
    h.press("9")
    assert in_menu(h) == "main" and h.played == ["file:ivr/welcome"]
    h.advance(2)
    assert last_play(h).prompts == (Prompt("file", "ivr/invalid"), Prompt("file", "ivr/welcome"))
    assert last_play(h).stop_keys == ALL_KEYS


def test_max_digits_ends_the_entry() -> None:
    h = call()
    h.advance(1)
    h.press("99")
    assert h.played[-2:] == ["file:ivr/invalid", "file:ivr/welcome"]


def test_terminator_alone_is_invalid_input() -> None:
    h = call()
    h.press("#")
    assert h.played[-2:] == ["file:ivr/invalid", "file:ivr/welcome"]


def test_terminator_can_be_disabled_and_used_as_an_option() -> None:
    menu = replace(CLOSED, terminator="", max_digits=1, options=(OptionDef("#", "hangup"),))
    h = call(ms=build_menuset([menu]))
    h.press("#")
    assert h.terminal == Hangup()


def test_non_dtmf_characters_are_ignored() -> None:
    h = call()
    h.advance(1)
    assert after(h, lambda: h.press("x ")) == []


# ---------------------------------------------------------------- retries


def test_timeouts_reprompt_then_exhausted_action() -> None:
    h = call(queue_outcome=lambda e: None)
    h.run()
    assert h.played == [
        "file:ivr/welcome",
        "file:ivr/timeout",
        "file:ivr/welcome",
        "file:ivr/timeout",
        "file:ivr/welcome",
        "file:ivr/timeout",
    ]
    timeout_play = last_play(h)
    assert not timeout_play.stop_keys
    assert h.terminal == Enqueue("operator", 0)
    assert h.now == pytest.approx(1 + 5 + 2 + 5 + 2 + 5 + 1)


def test_invalid_entries_exhaust_retries() -> None:
    h = call(queue_outcome=lambda e: None)
    for _ in range(3):
        h.press("99")
    assert h.played.count("file:ivr/invalid") == 3
    h.run()
    assert h.terminal == Enqueue("operator", 0)


def test_valid_input_resets_retries() -> None:
    h = call(queue_outcome=lambda e: None)
    h.press("99")
    h.press("99")  # two retries used
    h.press("4")  # play: valid input
    h.press("99")
    h.press("99")
    assert h.terminal is None and in_menu(h) == "main"


def test_zero_retries_takes_exhausted_action_on_first_failure() -> None:
    h = call()
    h.press("1#")
    h.advance(1)
    h.press("5")  # invalid in sales (max_retries 0): exhausted action is back
    assert in_menu(h) == "main"
    assert h.variables["ivr_menu_path"] == "main"


# ---------------------------------------------------------------- every action


def test_submenu_back_and_main_keep_a_path() -> None:
    h = call()
    h.press("1#")
    h.advance(1)
    h.press("1")
    assert in_menu(h) == "tech" and h.variables["ivr_menu_path"] == "main/sales/tech"
    assert h.flow.path == ("main", "sales", "tech")  # type: ignore[attr-defined]
    h.press("*")  # tech has no '*' option: invalid
    h2 = call()
    h2.press("1#")
    h2.advance(1)
    h2.press("0")  # back
    assert in_menu(h2) == "main" and h2.variables["ivr_menu_path"] == "main"
    h2.press("1#")
    h2.advance(1)
    h2.press("1")
    h2.press("1")  # tech option 1: enqueue
    assert h2.terminal == Enqueue("support")
    h3 = call()
    h3.press("1#")
    h3.advance(1)
    h3.press("9")  # main
    assert in_menu(h3) == "main" and h3.variables["ivr_menu_path"] == "main"


def test_back_in_the_first_menu_repeats_it_and_main_reenters() -> None:
    for key in ("*", "0", "6"):
        h = call()
        h.press(key)
        assert in_menu(h) == "main"
        assert h.played == ["file:ivr/welcome", "file:ivr/welcome"]
        assert h.variables["ivr_menu_path"] == "main"


def test_play_continues_in_the_menu_and_is_interruptible() -> None:
    h = call()
    h.press("4")
    play = last_play(h)
    assert play.prompts == (Prompt("file", "ivr/hours"),) and play.stop_keys == ALL_KEYS
    h.press("4")  # barge into it
    assert StopPlay(play.play_id) in h.commands
    h.advance(1)
    assert isinstance(h.commands[-1], StartTimer) and in_menu(h) == "main"


def test_set_variable_and_template_see_it() -> None:
    h = call()
    h.press("5")
    assert SetVariable("lang", "fr") in h.commands
    assert h.played[-1] == "tts:Langue fr pour +15550100"
    h.advance(1)
    assert isinstance(h.commands[-1], StartTimer)


def test_hangup_plays_option_prompt_first() -> None:
    """The option's prompt and the hangup go out together: the engine ends the call as the
    prompt ends, with no PlayFinished round trip through the worker."""
    h = call()
    cmds = after(h, lambda: h.press("7"))
    assert cmds[-2:] == [Play("ivr2", (Prompt("file", "ivr/bye"),), "", "en"),
                         Hangup(after_play="ivr2")]
    assert h.terminal == Hangup(after_play="ivr2") and h.flow.done
    assert h.flow.handle(PlayFinished("ivr2", "done")) == []


def test_a_hangup_after_a_play_that_is_not_playing_breaks_the_contract() -> None:
    h = call()
    with pytest.raises(ContractViolation):
        h._execute([Hangup(after_play="nope")])


def test_transfer_ends_the_flow() -> None:
    h = call()
    h.press("3")
    assert h.terminal == Transfer("+15550199") and h.flow.done
    assert h.flow.handle(Dtmf("1")) == []


def test_dial_user_answered_hangs_up() -> None:
    h = call(dial_outcome=lambda d: "answered")
    h.press("2")
    assert h.terminal == Dial("alice", "extension") and not h.flow.done
    h.run()
    assert h.terminal == Hangup()
    assert h.variables["ivr_dial_result"] == "answered"


def test_dial_agent_extension() -> None:
    h = call(dial_outcome=lambda d: None)
    h.press("8")
    assert h.terminal == Dial("bob", "agent")


def test_dial_busy_returns_to_the_menu_with_a_retry() -> None:
    h = call(dial_outcome=lambda d: "busy", queue_outcome=lambda e: None)
    h.press("2")
    h.advance(5)
    assert h.variables["ivr_dial_result"] == "busy"
    assert in_menu(h) == "main" and h.flow.state == "menu"  # type: ignore[attr-defined]
    assert h.played[-1] == "file:ivr/welcome"
    h.press("2")
    h.advance(5)
    h.press("2")
    h.advance(5)  # third failure: retries (2) used up -> exhausted action
    assert h.terminal == Enqueue("operator")


def test_dial_result_for_another_target_is_ignored() -> None:
    h = call(dial_outcome=lambda d: None)
    h.press("2")
    assert h.flow.handle(DialResult("carol", "busy")) == []
    assert h.flow.handle(QueueResult("support", "failed")) == []


@pytest.mark.parametrize(
    ("outcome", "detail", "expect"),
    [
        ("answered", "", "hangup"),
        ("abandoned", "", "done"),
        ("left", "", "menu:main"),
        ("overflow", "", "menu:main"),
        ("timeout", "", "menu:main"),
        ("failed", "", "menu:main"),
        ("overflow", "menu:sales", "menu:sales"),
        ("left", "menu:sales", "menu:sales"),
    ],
)
def test_queue_results(outcome: str, detail: str, expect: str) -> None:
    h = call(queue_outcome=lambda e: None)
    h.press("12")
    assert h.terminal == Enqueue("support", 5)
    h.flow.handle(QueueUpdate("support", 3))
    cmds = h.send_result(QueueResult("support", outcome, detail))  # type: ignore[arg-type]
    assert SetVariable("ivr_queue_result", outcome) in cmds
    if expect == "hangup":
        assert h.terminal == Hangup() and h.flow.done
    elif expect == "done":
        assert h.flow.done and cmds == [SetVariable("ivr_queue_result", outcome)]
    else:
        assert in_menu(h) == expect.removeprefix("menu:")
        assert not h.flow.done


def test_queue_position_is_available_to_templates() -> None:
    menu = replace(
        CLOSED,
        greeting=("tts:You were number {{ queue_position }} in {{ queue }}",),
        options=(OptionDef("1", "enqueue", "support"),),
    )
    h = call(ms=build_menuset([menu], queues={"support"}), queue_outcome=lambda e: None)
    h.press("1")
    h.flow.handle(QueueUpdate("support", 4))
    h.send_result(QueueResult("support", "left"))
    assert h.played[-1] == "tts:You were number 4 in support"


def test_failed_fallback_attempt_ends_the_call() -> None:
    h = call()  # the operator queue fails at once (harness default)
    h.run()
    assert h.terminal == Hangup()
    assert h.variables["ivr_queue_result"] == "failed"


# ---------------------------------------------------------------- extensions that are not menus


def test_queue_extension_enqueues_directly_and_hangs_up_on_failure() -> None:
    h = call(number="400")
    assert h.commands[:2] == [Answer(), Enqueue("support")]
    h.run()
    assert h.terminal == Hangup()


def test_user_extension_dials_directly() -> None:
    h = call(number="200", dial_outcome=lambda d: "no_answer")
    assert h.commands[:2] == [Answer(), Dial("alice")]
    h.run()
    assert h.terminal == Hangup()


# ---------------------------------------------------------------- schedules


def test_schedule_open_closed_and_holiday_across_dst() -> None:
    # Monday 2026-03-09 is the first weekday after spring-forward: 09:00 EDT = 13:00 UTC.
    before = call(number="500", at=datetime(2026, 3, 9, 12, 59, tzinfo=UTC))
    assert in_menu(before) == "closed" and before.variables["ivr_schedule"] == "closed"
    assert before.variables["ivr_menu_path"] == "tech/closed"
    assert before.played == ["file:ivr/closed"]
    opened = call(number="500", at=datetime(2026, 3, 9, 13, 0, tzinfo=UTC))
    assert in_menu(opened) == "tech" and opened.played == ["file:ivr/tech"]
    # The Friday before the change, 13:00 UTC was 08:00 EST: closed.
    assert in_menu(call(number="500", at=datetime(2026, 3, 6, 13, 0, tzinfo=UTC))) == "closed"
    # Fall back, Monday 2026-11-02: 09:00 EST = 14:00 UTC.
    assert in_menu(call(number="500", at=datetime(2026, 11, 2, 13, 59, tzinfo=UTC))) == "closed"
    assert in_menu(call(number="500", at=datetime(2026, 11, 2, 14, 0, tzinfo=UTC))) == "tech"
    holiday = call(number="500", at=datetime(2026, 12, 25, 15, 0, tzinfo=UTC))
    assert holiday.terminal == Transfer("+15550000")
    assert holiday.variables["ivr_schedule"] == "holiday"


def test_holiday_falls_back_to_closed_action() -> None:
    tech = replace(TECH, holiday_action=None, holiday_target="")
    h = call(
        number="500",
        at=datetime(2026, 12, 25, 15, 0, tzinfo=UTC),
        ms=menuset(MAIN, SALES, tech, CLOSED),
    )
    assert in_menu(h) == "closed"


def test_schedule_is_checked_when_entering_from_another_menu() -> None:
    h = call(at=datetime(2026, 3, 9, 3, 0, tzinfo=UTC))
    h.press("1#")
    h.advance(1)
    h.press("1")  # sales -> tech, closed at night
    assert in_menu(h) == "closed"


# ---------------------------------------------------------------- hangup at every step

SCRIPT: list[Callable[[FlowHarness], object]] = [
    lambda h: h.advance(0.5),
    lambda h: h.press("1"),
    lambda h: h.advance(2),  # option 1 -> announcement
    lambda h: h.advance(1),  # sales greeting
    lambda h: h.advance(1),
    lambda h: h.press("5"),  # invalid in sales -> back to main
    lambda h: h.press("4"),  # play
    lambda h: h.advance(1),
    lambda h: h.press("5"),  # set
    lambda h: h.advance(6),  # timeout reprompt
    lambda h: h.press("12"),  # enqueue
    lambda h: h.advance(1),
]


@pytest.mark.parametrize("steps", range(len(SCRIPT) + 1))
def test_hangup_at_every_step(steps: int) -> None:
    h = call(queue_outcome=lambda e: None)
    for step in SCRIPT[:steps]:
        step(h)
    assert not h.flow.done
    assert h.flow.handle(HungUp("NORMAL_CLEARING")) == []
    assert h.flow.done
    for event in (Dtmf("1"), TimerFired("ivr.timer2"), PlayFinished("ivr1"), HungUp()):
        assert h.flow.handle(event) == []


# ---------------------------------------------------------------- robustness


def _menu(name: str, exhausted: Action, options: tuple = ()) -> Menu:
    return Menu(
        name,
        (Prompt("file", name),),
        (),
        (),
        1.0,
        1.0,
        1,
        "#",
        0,
        exhausted,
        None,
        None,
        None,
        "en",
        options,
    )


def test_idle_loops_are_cut_even_if_validation_was_bypassed() -> None:
    menus = {
        "a": _menu("a", Action("submenu", "b")),
        "b": _menu("b", Action("submenu", "a")),
    }
    ms = MenuSet(1, MappingProxyType(menus), {}, {}, frozenset())
    h = FlowHarness(IvrCall(ms, "a"))
    h.start()
    h.run()
    assert h.terminal == Hangup()
    assert len(h.played) == MAX_IDLE_HOPS


def test_internal_error_hangs_up_instead_of_raising() -> None:
    menus = {"a": _menu("a", Action("submenu", "ghost"))}
    ms = MenuSet(1, MappingProxyType(menus), {}, {}, frozenset())
    flow = IvrCall(ms, "a")
    h = FlowHarness(flow)
    h.start()
    h.run()
    assert h.terminal == Hangup("NORMAL_TEMPORARY_FAILURE")
    assert flow.error is not None and "ghost" in flow.error
    assert flow.done


def test_menu_language_and_path_variables_reach_prompts() -> None:
    fr = replace(
        CLOSED,
        name="fr",
        language="fr-CA",
        greeting=("tts:{{ menu }} {{ menu_path }} {{ language }} {{ called }}",),
        options=(OptionDef("1", "submenu", "de"),),
    )
    de = replace(CLOSED, name="de", language="de", greeting=("tts:{{ menu_path }} {{ digits }}",))
    h = call(ms=build_menuset([fr, de]))
    assert last_play(h) == Play("ivr1", (Prompt("tts", "fr fr fr-CA 9999"),), ALL_KEYS, "fr-CA")
    h.press("1")
    assert last_play(h).language == "de"
    assert last_play(h).prompts == (Prompt("tts", "fr/de 1"),)


@pytest.mark.parametrize(
    ("path", "outcome", "detail", "menu"),
    [
        ("main/sales", "left", "", "sales"),  # the exit key: back to the menu that queued
        ("main/sales", "overflow", "menu:tech", "tech"),  # the queue's menu route
        ("main/sales", "failed", "", "main"),  # sales has no retries left: exhausted -> back
        ("main/gone", "left", "", "main"),  # a menu since deleted is skipped
        ("main/sales", "answered", "ann", None),  # the call is over
        ("gone", "failed", "", None),  # no menu known: as if queued by the extension
    ],
)
def test_a_taken_over_caller_resumes_waiting_in_the_menu_that_queued_them(
    path: str, outcome: str, detail: str, menu: str | None,
) -> None:
    """Another worker queued the caller from ``path`` and died; this worker took the caller
    over and begins the IVR where it waits for the queue's result, which goes on as if this
    flow had queued them."""
    flow = MS.flow_for("9999", clock=lambda: OPEN_TIME)
    assert flow is not None
    assert flow.resume_queued(CallInfo("c1", "test", "+15550100", "9999"), "support", path) == []
    assert flow.state == "wait"
    assert flow.handle(QueueUpdate("support", 2)) == []
    cmds = flow.handle(QueueResult("support", outcome, detail))  # type: ignore[arg-type]
    assert SetVariable("ivr_queue_result", outcome) in cmds
    if menu is None:
        assert cmds[-1] == Hangup() and flow.done
    else:
        assert flow.menu == menu and not flow.done
        assert isinstance(cmds[-1], Play | StartTimer)
