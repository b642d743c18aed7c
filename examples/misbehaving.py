"""Flows that misbehave, to show containment (dial 8901-8903); each ends only its own call.

8901 raises, 8902 waits for digits that never come (the per-step timeout ends it), 8903
keeps going after the caller hung up (it is closed and gets nothing executed).
"""

from __future__ import annotations

from ivr.app import App, Call, CallerHungUp, Flow, answer, collect, play

app = App("misbehaving", error_prompt="errors/sorry", step_timeout=2.0)
CLOSED: list[str] = []  # calls whose flow was closed after ignoring the hangup


@app.route("8901")
def raises(call: Call) -> Flow:
    yield answer()
    yield play("errors/about-to-fail")
    raise RuntimeError("lookup service exploded")


@app.route("8902")
def never_returns(call: Call) -> Flow:
    yield answer()
    while True:
        yield collect(timeout=None)  # waits for a digit forever: bounded by step_timeout


@app.route("8903")
def ignores_hangup(call: Call) -> Flow:
    yield answer()
    try:
        while True:
            try:
                yield play("errors/looping")
            except CallerHungUp:
                continue  # wrong: the caller is gone
    finally:
        CLOSED.append(call.call_id)
