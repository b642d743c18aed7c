"""After-hours message with a callback request (dial 8200).

The caller hears that the office is closed; pressing 1 asks for a callback: to the calling
number (press 1) or to another one they key in. The request is read back, kept in
``CALLBACKS`` and set on the call (``callback_number``) for the CDR.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.app import (
    App,
    Call,
    CallerHungUp,
    Flow,
    answer,
    collect,
    hangup,
    play,
    say_digits,
    set_var,
)


@dataclass(frozen=True)
class CallbackRequest:
    caller: str
    number: str


CALLBACKS: list[CallbackRequest] = []  # a real app would write to its ticketing system
ABANDONED: list[str] = []  # callers who hung up halfway through a request

app = App("after-hours")


@app.route("8200")
def after_hours(call: Call) -> Flow:
    yield answer()
    choice = yield collect("afterhours/closed", "afterhours/press-1-callback", timeout=4)
    if choice != "1":
        yield play("afterhours/goodbye")
        yield hangup()
    try:
        number = call.caller.lstrip("+")
        use_own = yield collect("afterhours/callback-this-number", timeout=5)
        if use_own != "1":
            number = yield collect("afterhours/enter-number", min_digits=3, max_digits=15,
                                   inter_digit_timeout=4)
            if number is None:
                yield play("afterhours/no-number")
                yield hangup()
        yield play("afterhours/we-will-call")
        yield say_digits(number)
        confirm = yield collect("afterhours/press-1-confirm", timeout=5)
        if confirm != "1":
            yield play("afterhours/cancelled")
            yield hangup()
        CALLBACKS.append(CallbackRequest(call.caller, number))
        yield set_var("callback_number", number)
        yield play("afterhours/thanks")
    except CallerHungUp:
        ABANDONED.append(call.caller)
        raise
