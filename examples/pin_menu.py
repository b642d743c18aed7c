"""A PIN-protected menu (dial 8300 or any 83xx).

Callers key in their 4-digit PIN (three tries). Then: 1 hears the number of new messages,
2 joins the "support" queue, 0 goes to the operator (1000), * hangs up.
"""

from __future__ import annotations

from ivr.app import (
    App,
    Call,
    Flow,
    answer,
    collect,
    enqueue,
    get_var,
    hangup,
    play,
    say_number,
    set_var,
    transfer,
)

PINS = {"+15550100": "4321", "+15550199": "1111"}  # caller -> PIN
NEW_MESSAGES = {"+15550100": 3, "+15550199": 0}

app = App("pin-menu")


@app.route(r"^83\d{2}$")
def pin_menu(call: Call) -> Flow:
    yield answer()
    for _ in range(3):
        pin = yield collect("pin/enter-pin", min_digits=4, max_digits=4, timeout=5)
        if pin is not None and PINS.get(call.caller) == pin:
            yield set_var("pin_ok", "yes")
            break
        yield play("pin/wrong-pin")
    if (yield get_var("pin_ok")) != "yes":
        yield play("pin/goodbye")
        yield hangup("CALL_REJECTED")
    while True:
        choice = yield collect("pin/menu", timeout=5)
        if choice == "1":
            yield play("pin/you-have", interruptible=True)
            yield say_number(NEW_MESSAGES.get(call.caller, 0))
            yield play("pin/new-messages")
        elif choice == "2":
            result = yield enqueue("support")
            if result.outcome == "answered":
                yield hangup()
            yield play("pin/queue-unavailable")
        elif choice == "0":
            yield transfer("1000")
        elif choice == "*" or choice is None:
            yield play("pin/goodbye")
            yield hangup()
        else:
            yield play("pin/invalid")
