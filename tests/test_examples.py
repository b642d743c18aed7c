"""The example apps unit-tested with the app-author helper (ivr.app_testing), no engine."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from ivr.app_testing import place_call

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ lives at the repo root
examples: Any = importlib.import_module("examples")


def test_order_status_reads_the_order_and_connects() -> None:
    call = place_call(examples.order_status.app, "8100", dial={"1001": "answered"})
    call.press("4242#")
    call.assert_played("orders/welcome", "orders/your-order", "digits:3090",
                       "orders/status-delivered", "orders/options")
    call.press("1")
    call.run()
    assert call.dialed == ["1001"] and call.hangup_cause == "NORMAL_CLEARING"
    assert call.variables["order_account"] == "4242"


def test_order_status_agent_busy_apologises() -> None:
    call = place_call(examples.order_status.app, "8100", dial={"1001": "busy"})
    call.press("1234#")
    call.press("1")
    call.run()
    assert call.played[-1] == "file:orders/agents-busy" and call.ended


def test_order_status_silence_at_the_options_says_goodbye() -> None:
    call = place_call(examples.order_status.app, "8100")
    call.press("1234#")
    call.run()
    assert call.played[-1] == "file:orders/goodbye" and call.dialed == []


def test_order_status_lookup_is_a_plain_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(examples.order_status.ORDERS, "77777", examples.order_status.Order(
        "12", "shipped"))
    call = place_call(examples.order_status.app, "8100")
    call.press("77777#")
    call.assert_played("digits:12", "orders/status-shipped")


def test_order_status_no_entry_three_times_goes_to_the_operator() -> None:
    call = place_call(examples.order_status.app, "8100")
    call.run()
    assert call.transferred_to == "1000"
    assert call.played.count("file:orders/not-found") == 3


def test_after_hours_callback_to_own_number(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[Any] = []
    monkeypatch.setattr(examples.after_hours, "CALLBACKS", requests)
    call = place_call(examples.after_hours.app, "8200", caller="+15550123")
    call.press("1")
    call.press("1")  # this number
    call.assert_played("afterhours/we-will-call", "digits:15550123")
    call.press("1")  # confirm
    call.run()
    assert requests == [examples.after_hours.CallbackRequest("+15550123", "15550123")]
    assert call.variables == {"callback_number": "15550123"}
    assert call.played[-1] == "file:afterhours/thanks" and call.hangup_cause == "NORMAL_CLEARING"


def test_after_hours_not_confirmed_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[Any] = []
    monkeypatch.setattr(examples.after_hours, "CALLBACKS", requests)
    call = place_call(examples.after_hours.app, "8200")
    call.press("1")
    call.press("2")
    call.press("5557788#")
    call.press("9")
    call.run()
    assert requests == [] and call.played[-1] == "file:afterhours/cancelled"


def test_after_hours_hangup_midway_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    abandoned: list[str] = []
    monkeypatch.setattr(examples.after_hours, "ABANDONED", abandoned)
    call = place_call(examples.after_hours.app, "8200", caller="+15550999")
    call.press("1")
    call.press("2")
    call.press("55")
    call.hangup()
    assert abandoned == ["+15550999"] and call.flow.done


def test_pin_menu_queue_then_operator() -> None:
    call = place_call(examples.pin_menu.app, "8355", queue={"support": "timeout"})
    call.press("4321")
    call.press("2")
    call.assert_played("pin/menu", "pin/queue-unavailable", "pin/menu")
    call.press("0")
    call.run()
    assert call.enqueued == ["support"] and call.transferred_to == "1000"
    assert call.variables["pin_ok"] == "yes"


def test_pin_menu_rejects_wrong_pins_and_unknown_callers() -> None:
    call = place_call(examples.pin_menu.app, "8300", caller="+19990000")
    call.press("4321")
    call.press("4321")
    call.press("4321")
    call.run()
    assert call.played.count("file:pin/wrong-pin") == 3
    assert call.hangup_cause == "CALL_REJECTED" and "file:pin/menu" not in call.played


def test_misbehaving_flows_are_contained() -> None:
    app = examples.misbehaving.app
    raised = place_call(app, "8901")
    raised.run()
    assert raised.played[-1] == "file:errors/sorry" and "exploded" in (raised.error or "")
    stuck = place_call(app, "8902")
    stuck.run()
    assert stuck.hangup_cause == "NORMAL_TEMPORARY_FAILURE" and "timeout" in (stuck.error or "")
    stubborn = place_call(app, "8903")
    stubborn.wait(3)
    count = len(stubborn.commands)
    stubborn.hangup()
    assert stubborn.flow.done and len(stubborn.commands) == count
    assert "test-8903" in examples.misbehaving.CLOSED


def test_examples_app_routes_every_example() -> None:
    numbers = examples.app.numbers()
    assert {"8100", "8200", r"^83\d{2}$", "8901", "8902", "8903"} <= set(numbers)
    with pytest.raises(LookupError):
        place_call(examples.app, "8400")
