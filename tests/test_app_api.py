"""The call-flow API (ivr.app): steps, results, routing and containment, under the strict
test driver (FlowHarness via ivr.app_testing)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from appserver.apps import AppLoadError, AppRouter, load_app
from ivr import calls as c
from ivr.app import (
    DEFAULT_ERROR_PROMPT,
    App,
    Call,
    CallerHungUp,
    Flow,
    GeneratorFlow,
    answer,
    collect,
    dial,
    enqueue,
    get_var,
    hangup,
    pause,
    play,
    say_digits,
    say_number,
    set_var,
    to_prompt,
    transfer,
)
from ivr.app_testing import place_call
from ivr.testing import FlowHarness, default_call

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ lives at the repo root


def make_app(**options: object) -> App:
    return App("t", **options)  # type: ignore[arg-type]


def test_prompt_specs() -> None:
    assert to_prompt("ivr/welcome") == c.Prompt("file", "ivr/welcome")
    assert to_prompt("tts:Hello there") == c.Prompt("tts", "Hello there")
    assert to_prompt("digits:42") == c.Prompt("digits", "42")
    assert to_prompt("silence:500") == c.Prompt("silence", "500")
    with pytest.raises(ValueError):
        to_prompt("digits:4x2")
    with pytest.raises(ValueError):
        to_prompt("")


def test_step_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        collect(min_digits=3, max_digits=2)
    with pytest.raises(ValueError):
        collect(terminator="##")
    with pytest.raises(ValueError):
        collect(timeout=0)
    with pytest.raises(ValueError):
        set_var("bad name", "x")
    with pytest.raises(ValueError):
        dial("")
    with pytest.raises(ValueError):
        play()
    with pytest.raises(ValueError):
        pause(-1)


def test_routes_exact_then_patterns_in_order() -> None:
    app = make_app()

    @app.route(r"^8\d{3}$")
    def pattern(call: Call) -> Flow:
        yield hangup()

    @app.route("8000")
    def exact(call: Call) -> Flow:
        yield hangup()

    assert app.match("8000").handler is exact  # type: ignore[union-attr]
    assert app.match("8123").handler is pattern  # type: ignore[union-attr]
    assert app.match("81234") is None
    assert app(default_call("1234")) is None
    assert isinstance(app(default_call("8001")), GeneratorFlow)
    with pytest.raises(ValueError, match="twice"):
        app.add_route("8000", exact)
    with pytest.raises(ValueError, match="bad route"):
        app.add_route("8(", exact)
    with pytest.raises(TypeError, match="not a generator function"):
        app.add_route("9000", lambda call: None)  # type: ignore[arg-type,return-value]


def test_app_is_a_flow_factory_for_the_router() -> None:
    app = load_app("examples:app")
    router = AppRouter([app])
    assert isinstance(router(default_call("8100")), GeneratorFlow)
    assert router(default_call("7777")) is None


def test_play_collect_say_and_variables() -> None:
    app = make_app()
    seen: list[object] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        yield answer()
        seen.append((yield play("a/intro")))
        seen.append((yield collect("a/enter", min_digits=2, max_digits=4)))
        yield set_var("entered", seen[-1])
        seen.append((yield get_var("entered")))
        seen.append((yield get_var("from_engine")))
        yield say_digits("12")
        yield say_number(7)

    call = place_call(app, "1", variables={"from_engine": "yes"})
    call.press("123#")
    call.run()
    assert seen == ["", "123", "123", "yes"]
    assert call.played == ["file:a/intro", "file:a/enter", "digits:12", "number:7"]
    assert call.variables == {"entered": "123"}
    assert call.hangup_cause == "NORMAL_CLEARING"  # returning hangs up
    assert call.error is None


def test_interruptible_play_returns_the_digits_and_stops() -> None:
    app = make_app()
    got: list[str] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        got.append((yield play("a/long", "a/longer", interruptible=True)))
        got.append((yield play("a/not-interruptible")))

    call = place_call(app, "1")
    call.press("5")
    call.press_now("9")  # during the second play: ignored
    call.run()
    assert got == ["5", ""]
    assert any(isinstance(cmd, c.StopPlay) for cmd in call.commands)


def test_collect_timeouts_terminator_and_min_digits() -> None:
    app = make_app()
    got: list[str | None] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        got.append((yield collect("p", max_digits=4, timeout=2)))  # nothing pressed
        got.append((yield collect("p", min_digits=3, max_digits=6)))  # "12#": too short
        got.append((yield collect("p", min_digits=2, max_digits=6, inter_digit_timeout=1)))
        got.append((yield collect("p", min_digits=0, max_digits=3, timeout=1)))

    call = place_call(app, "1")
    call.wait(3.5)  # prompt (1 s) + first-digit timeout (2 s)
    call.press("12#")
    call.press("45", gap=0.1)
    call.wait(1.5)  # inter-digit timeout ends the entry
    call.run()
    assert got == [None, None, "45", ""]


def test_dial_enqueue_transfer_results() -> None:
    app = make_app()
    results: list[object] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        yield answer()
        results.append((yield dial("1002")))
        results.append((yield enqueue("support", priority=2)))
        yield transfer("2000")
        results.append("not reached")

    call = place_call(app, "1", dial={"1002": "busy"}, queue={"support": "overflow"})
    call.run()
    assert results == [c.DialResult("1002", "busy"), c.QueueResult("support", "overflow")]
    assert call.dialed == ["1002"] and call.enqueued == ["support"]
    assert call.transferred_to == "2000"


def test_caller_hangup_raises_inside_the_flow_so_finally_runs() -> None:
    app = make_app()
    trace: list[str] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        try:
            yield collect("p", timeout=10)
        except CallerHungUp as exc:
            trace.append(f"hung up {exc.cause}")
            raise
        finally:
            trace.append("cleanup")

    call = place_call(app, "1")
    call.wait(2)
    call.hangup()
    assert trace == ["hung up NORMAL_CLEARING", "cleanup"]
    assert call.flow.done


def test_exception_ends_the_call_politely_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(error_prompt="errors/sorry")
    cleaned: list[bool] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        try:
            yield play("a/hello")
            raise KeyError("no such account")
        finally:
            cleaned.append(True)

    with caplog.at_level(logging.ERROR, "callyard.app"):
        call = place_call(app, "1")
        call.run()
    assert call.played == ["file:a/hello", "file:errors/sorry"]
    assert call.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    assert "KeyError" in (call.error or "") and cleaned == [True]
    record = next(r for r in caplog.records if r.name == "callyard.app")
    assert record.call_id == "test-1" and "test-1" in record.getMessage()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    ["yield 42", "yield c.Answer()", "return; yield"],
    ids=["not a step", "a raw command", "returns at once"],
)
def test_bad_steps_are_contained(body: str) -> None:
    app = make_app()
    namespace: dict[str, object] = {"c": c}
    exec(f"def flow(call):\n    {body}\n", namespace)
    app.add_route("1", namespace["flow"])  # type: ignore[arg-type]
    call = place_call(app, "1")
    call.run()
    assert call.ended
    if body.startswith("return"):
        assert call.error is None and call.hangup_cause == "NORMAL_CLEARING"
    else:
        assert "not a step" in (call.error or "")
        assert call.played[-1] == f"file:{DEFAULT_ERROR_PROMPT}"


def test_a_flow_that_never_returns_hits_the_step_timeout() -> None:
    app = make_app(step_timeout=10)

    @app.route("1")
    def flow(call: Call) -> Flow:
        yield answer()
        while True:
            yield collect(timeout=None)

    call = place_call(app, "1")
    call.run()
    assert call.ended and "step timeout" in (call.error or "")
    assert call.harness.now == pytest.approx(11.0)  # 10 s, then the 1 s error prompt


def test_a_loop_of_steps_is_bounded_by_max_steps() -> None:
    app = make_app(max_steps=50)

    @app.route("1")
    def flow(call: Call) -> Flow:
        while True:
            yield set_var("spin", "1")

    call = place_call(app, "1")
    call.run()
    assert call.ended and "more than 50 steps" in (call.error or "")


def test_a_flow_ignoring_the_hangup_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    closed: list[bool] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        try:
            while True:
                try:
                    yield play("a/loop")
                except CallerHungUp:
                    continue
        finally:
            closed.append(True)

    call = place_call(app, "1")
    call.wait(2.5)
    before = len(call.commands)
    with caplog.at_level(logging.WARNING, "callyard.app"):
        call.hangup()
    assert closed == [True] and call.flow.done
    assert len(call.commands) == before
    assert call.flow.handle(c.Dtmf("1")) == [] and call.flow.handle(c.TimerFired("app.step")) == []
    assert "ignored the hangup" in caplog.text


def test_calls_are_independent() -> None:
    app = load_app("examples:app")
    bad = FlowHarness(app(default_call("8901")))  # type: ignore[arg-type]
    good = place_call(app, "8100")  # type: ignore[arg-type]
    bad.start()
    good.press("1234#")
    bad.run()
    good.press("*")
    good.run()
    assert bad.terminal == c.Hangup("NORMAL_TEMPORARY_FAILURE")
    good.assert_played("orders/status-shipped", "orders/goodbye")


def test_loading_an_app_without_routes_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    module = types.ModuleType("empty_app_module")
    module.app = App("empty")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "empty_app_module", module)
    with pytest.raises(AppLoadError, match="no routes"):
        load_app("empty_app_module:app")


def test_digits_after_a_complete_entry_are_type_ahead_for_the_next_collect() -> None:
    app = make_app()
    got: list[str | None] = []

    @app.route("1")
    def flow(call: Call) -> Flow:
        got.append((yield collect("p", max_digits=1)))
        got.append((yield collect("q", max_digits=3, terminator="*")))
        got.append((yield play("r", interruptible=True)))

    call = place_call(app, "1")
    call.harness.advance(0.5)
    call.press_now("245*9")  # one Dtmf event carrying several digits
    call.run()
    assert got == ["2", "45", ""]  # "9" arrived while nothing listened for it


def test_flows_compose_with_yield_from() -> None:
    app = make_app()

    def ask_pin(call: Call) -> Flow:
        for _ in range(2):
            pin = yield collect("pin/enter", min_digits=4, max_digits=4)
            if pin == "1234":
                return True
        return False

    @app.route("1")
    def flow(call: Call) -> Flow:
        ok = yield from ask_pin(call)
        yield play("pin/welcome" if ok else "pin/goodbye")

    call = place_call(app, "1")
    call.press("0000")
    call.press("1234")
    call.run()
    assert call.played == ["file:pin/enter", "file:pin/enter", "file:pin/welcome"]
