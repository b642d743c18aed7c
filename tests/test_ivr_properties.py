"""Property tests: any valid menu set, any event sequence.

The machine never raises, never emits a command the driver contract forbids (checked by
ivr.testing.FlowHarness), and every call ends: once the caller stops pressing keys, driving
plays and timers (and failing any queue or dial attempt) always reaches a Hangup or Transfer,
or the flow is done.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ivr.calls import (
    AgentAssigned,
    Answered,
    CallInfo,
    DialResult,
    Dtmf,
    Event,
    HungUp,
    PlayFinished,
    QueueResult,
    QueueUpdate,
    TimerFired,
    TransferResult,
)
from ivr.compile import MenuSet, compile_menuset
from ivr.machine import IvrCall
from ivr.model import ExtensionDef, HoursDef, MenuDef, MenuSource, OptionDef, ScheduleDef
from ivr.testing import ContractViolation, FlowHarness
from ivr.validate import MenuSetInvalid

QUEUES = ("q1", "q2")
PROMPTS = (
    "file:ivr/a",
    "file:ivr/b",
    "tts:Hello {{ caller }}",
    "tts:{{ menu_path }} {{ digits }}",
    "number:{{ queue_position }}",
    "digits:{{ called }}",
    "silence:300",
)
QUEUE_OUTCOMES = ("answered", "overflow", "abandoned", "timeout", "left", "failed")
DIAL_OUTCOMES = ("answered", "busy", "no_answer", "failed")
SCHEDULE = ScheduleDef(
    "hours", "Europe/Paris", tuple(HoursDef(d, time(9), time(17)) for d in range(5))
)
settings.register_profile(
    "ivr", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@st.composite
def actions(draw: st.DrawFn, names: list[str], option: bool) -> tuple[str, str]:
    kinds = ["submenu", "back", "main", "enqueue", "dial", "transfer", "hangup"]
    if option:
        kinds += ["repeat", "play", "set"]
    kind = draw(st.sampled_from(kinds if names else kinds[1:]))
    if kind == "submenu":
        return kind, draw(st.sampled_from(names))
    if kind == "enqueue":
        queue = draw(st.sampled_from(QUEUES))
        return kind, draw(st.sampled_from([queue, f"{queue}:{draw(st.integers(-5, 9))}"]))
    if kind == "dial":
        return kind, draw(st.sampled_from(["200", "300", "400", "100"]))
    if kind == "transfer":
        return kind, "+15550199"
    if kind == "set":
        return kind, draw(st.sampled_from(["lang=fr", "vip=1"]))
    return kind, ""


@st.composite
def menus(draw: st.DrawFn, name: str, names: list[str]) -> MenuDef:
    terminator = draw(st.sampled_from(["#", "*", ""]))
    max_digits = draw(st.integers(1, 3))
    alphabet = [c for c in "0123456789*#" if c != terminator]
    digit_strings = st.text(alphabet=alphabet, min_size=1, max_size=max_digits)
    options = []
    for digits in draw(st.lists(digit_strings, max_size=6, unique=True)):
        kind, target = draw(actions(names, True))
        if kind == "submenu" and target == name:
            kind, target = "repeat", ""
        prompt = tuple(draw(st.lists(st.sampled_from(PROMPTS), max_size=2)))
        if kind == "play" and not prompt:
            prompt = ("file:ivr/info",)
        options.append(OptionDef(digits, kind, target, prompt))
    exhausted, exhausted_target = draw(actions([n for n in names if n != name], False))
    scheduled = draw(st.booleans())
    closed = draw(actions([n for n in names if n != name], False)) if scheduled else (None, "")
    holiday = (
        draw(st.one_of(st.none(), actions([n for n in names if n != name], False)))
        if scheduled
        else None
    )
    if exhausted == "submenu" and not exhausted_target:
        exhausted = "hangup"
    prompt_lists = st.lists(st.sampled_from(PROMPTS), max_size=2).map(tuple)
    return MenuDef(
        name,
        greeting=draw(prompt_lists),
        invalid_prompt=draw(prompt_lists),
        timeout_prompt=draw(prompt_lists),
        first_digit_timeout=draw(st.sampled_from([0.5, 3.0, 5.0])),
        inter_digit_timeout=draw(st.sampled_from([0.2, 1.0, 2.0])),
        max_digits=max_digits,
        terminator=terminator,
        max_retries=draw(st.integers(0, 3)),
        exhausted_action=exhausted,
        exhausted_target=exhausted_target,
        schedule="hours" if scheduled else None,
        closed_action=closed[0],
        closed_target=closed[1],
        holiday_action=holiday[0] if holiday else None,
        holiday_target=holiday[1] if holiday else "",
        options=tuple(options),
    )


@st.composite
def menusets(draw: st.DrawFn) -> MenuSet:
    n = draw(st.integers(1, 4))
    names = [f"m{i}" for i in range(n)]
    defs = tuple(draw(menus(name, names)) for name in names)
    source = MenuSource(
        menus=defs,
        schedules=(SCHEDULE,),
        extensions=(
            ExtensionDef("100", "menu", "m0"),
            ExtensionDef("200", "user", "alice"),
            ExtensionDef("300", "queue", "q1"),
            ExtensionDef("400", "agent", "bob"),
        ),
        queues=frozenset(QUEUES),
    )
    try:
        return compile_menuset(source, 1)
    except MenuSetInvalid:
        assume(False)
        raise


def steps() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.just("press"), st.text(alphabet="0123456789*#", min_size=1, max_size=3)),
        st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 1.0, 2.0, 6.0])),
        st.tuples(st.just("hangup"), st.none()),
    )


def instants() -> st.SearchStrategy[datetime]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return st.integers(0, 365 * 24 * 4).map(lambda q: start + timedelta(minutes=15 * q))


@settings.get_profile("ivr")
@given(
    ms=menusets(),
    number=st.sampled_from(["100", "200", "300", "400"]),
    script=st.lists(steps(), max_size=25),
    queue_outcomes=st.lists(st.sampled_from(QUEUE_OUTCOMES), max_size=4),
    dial_outcomes=st.lists(st.sampled_from(DIAL_OUTCOMES), max_size=4),
    at=instants(),
)
def test_any_call_follows_the_contract_and_ends(
    ms: MenuSet,
    number: str,
    script: list[tuple[str, Any]],
    queue_outcomes: list[str],
    dial_outcomes: list[str],
    at: datetime,
) -> None:
    flow = ms.flow_for(number, clock=lambda: at)
    assert flow is not None
    h = FlowHarness(
        flow,
        queue_outcome=lambda e: queue_outcomes.pop() if queue_outcomes else "failed",
        dial_outcome=lambda d: dial_outcomes.pop() if dial_outcomes else "busy",
    )
    h.start()  # ContractViolation is an AssertionError: any breach fails the test
    for kind, arg in script:
        if h.done:
            break
        if kind == "press":
            h.press(arg)
        elif kind == "advance":
            h.advance(arg)
        else:
            h.hangup()
    # The caller stops pressing keys: the call must end by itself.
    for _ in range(100):
        if h.done:
            break
        h.run()
    assert h.done, f"call stuck in state {flow.state} (menu {flow.menu}); log: {h.log[-10:]}"
    assert flow.error is None, flow.error
    assert h.hung_up or h.terminal is not None


@settings.get_profile("ivr")
@given(
    ms=menusets(),
    events=st.lists(
        st.one_of(
            st.builds(Dtmf, st.text(max_size=4)),
            st.builds(
                PlayFinished,
                st.sampled_from([f"ivr{i}" for i in range(1, 12)] + ["x"]),
                st.sampled_from(["done", "stopped", "failed"]),
            ),
            st.builds(TimerFired, st.sampled_from([f"ivr.timer{i}" for i in range(1, 12)])),
            st.builds(
                QueueResult,
                st.sampled_from(QUEUES),
                st.sampled_from(QUEUE_OUTCOMES),
                st.sampled_from(["", "menu:m0", "menu:m1", "menu:zz"]),
            ),
            st.builds(
                DialResult, st.sampled_from(["alice", "bob"]), st.sampled_from(DIAL_OUTCOMES)
            ),
            st.builds(QueueUpdate, st.sampled_from(QUEUES), st.integers(-1, 50)),
            st.builds(AgentAssigned, st.sampled_from(QUEUES), st.just("bob"), st.just("bob")),
            st.builds(TransferResult, st.just("+1"), st.booleans()),
            st.just(Answered()),
            st.just(HungUp()),
        ),
        max_size=40,
    ),
)
def test_arbitrary_event_sequences_never_raise(ms: MenuSet, events: list[Event]) -> None:
    """Even events a correct driver would never send (stale ids, duplicates) are handled."""
    flow = IvrCall(ms, "m0", clock=lambda: datetime(2026, 3, 9, 10, tzinfo=UTC))
    commands = flow.start(CallInfo("c1", "test", "+15550100", "100"))
    checker = FlowHarness(flow)
    for event in events:
        for cmd in commands:
            try:
                checker._check(cmd)  # stateless parts of the contract
            except ContractViolation as exc:
                if (
                    "not playing" not in str(exc)
                    and "not running" not in str(exc)
                    and ("after the call" not in str(exc) and "while waiting" not in str(exc))
                ):
                    raise
        commands = flow.handle(event)
        assert isinstance(commands, list)
        if flow.done:
            assert flow.handle(event) == []
    assert flow.error is None, flow.error
