"""Property tests of the generator-flow runner: for every example app number and any caller
behaviour (digits at any time, stray engine events, a hangup anywhere), the runner never
raises, never breaks the driver contract (FlowHarness checks every command) and every call
ends once the caller stops pressing keys."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr import calls as c
from ivr.app import GeneratorFlow
from ivr.testing import FlowHarness

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ lives at the repo root
examples: Any = importlib.import_module("examples")

NUMBERS = ["8100", "8200", "8300", "8301", "8901", "8902", "8903"]
STRAY: list[c.Event] = [
    c.Answered(), c.PlayFinished("app1"), c.PlayFinished("nope", "failed"),
    c.TimerFired("app.step"), c.TimerFired("app.input"), c.TimerFired("other"),
    c.DialResult("1001", "answered"), c.QueueResult("support", "answered"),
    c.QueueUpdate("support", 2), c.AgentAssigned("support", "ann", "1001"),
    c.TransferResult("1000", True),
]  # fmt: skip

actions = st.lists(
    st.one_of(
        st.tuples(st.just("press"), st.text("0123456789*#", min_size=1, max_size=6)),
        st.tuples(st.just("wait"), st.floats(0.0, 8.0)),
        st.tuples(st.just("stray"), st.sampled_from(range(len(STRAY)))),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    number=st.sampled_from(NUMBERS),
    caller=st.sampled_from(["+15550100", "+15550199", "+19990000"]),
    steps=actions,
    hang_up=st.booleans(),
    dial=st.sampled_from(["answered", "busy", "no_answer", "failed"]),
    queue=st.sampled_from(["answered", "timeout", "overflow", "failed", None]),
)
def test_any_caller_behaviour_keeps_the_contract_and_ends(
    number: str, caller: str, steps: list[tuple[str, Any]], hang_up: bool, dial: str,
    queue: str | None,
) -> None:
    info = c.CallInfo(call_id="prop", engine="test", caller=caller, called=number)
    flow = examples.app(info)
    assert isinstance(flow, GeneratorFlow)
    h = FlowHarness(flow, info, prompt_seconds=0.7, result_delay=2.0,
                    dial_outcome=lambda d: dial, queue_outcome=lambda e: queue)
    h.start()
    for op, arg in steps:
        if h.done:
            break
        if op == "press":
            h.press(arg)
        elif op == "wait":
            h.advance(arg)
        elif h.waiting is None:  # a driver sends no other event while a result is awaited
            h.send(STRAY[arg])
    if hang_up:
        h.hangup()
    elif h.waiting is not None and queue is None:
        h.send_result(c.QueueResult(h.waiting.queue, "abandoned"))  # type: ignore[union-attr]
    h.run(limit=3600)
    assert h.done or flow.done, (h.played, flow.waiting_on)
