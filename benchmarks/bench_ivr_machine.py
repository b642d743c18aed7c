"""Events per second handled by the pure IVR machine on one core.

A realistic call (greeting, barge-in, multi-digit entry resolved by the inter-digit timer,
submenu, an invalid entry and re-prompt, a templated prompt, a set action, a failed dial
returning to the menu, then enqueue and its result) is recorded once with the test harness;
the same event sequence is then replayed into fresh ``IvrCall`` objects (ids are
deterministic per call), timing only ``start`` and ``handle``.

    .venv/bin/python benchmarks/bench_ivr_machine.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from ivr.calls import CallInfo, Command, Event
from ivr.machine import IvrCall
from ivr.model import MenuDef, OptionDef
from ivr.testing import FlowHarness, build_menuset

MENUSET = build_menuset(
    [
        MenuDef(
            "main",
            greeting=("file:ivr/welcome", "tts:Hello {{ caller }}"),
            invalid_prompt=("file:ivr/invalid",),
            timeout_prompt=("file:ivr/timeout",),
            max_digits=2,
            options=(
                OptionDef("1", "submenu", "sales", ("file:ivr/to-sales",)),
                OptionDef("12", "enqueue", "support:5"),
                OptionDef("5", "set", "lang=fr"),
            ),
        ),
        MenuDef(
            "sales",
            greeting=("file:ivr/sales",),
            options=(OptionDef("2", "dial", "200"), OptionDef("0", "back")),
        ),
    ],
    extensions={"9999": ("menu", "main"), "200": ("user", "alice")},
    queues={"support"},
)
CALL = CallInfo("bench", "test", "+15550100", "9999")
NOW = datetime(2026, 3, 9, 15, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def record() -> tuple[list[Event], list[list[Command]]]:
    """Drive one call with the harness; return the events it delivered and the replies."""
    h = FlowHarness(
        IvrCall(MENUSET, "main", clock=clock),
        call=CALL,
        queue_outcome=lambda e: "answered",
        dial_outcome=lambda d: "busy",
    )
    h.start()
    h.advance(0.5)
    h.press("1")  # barge-in, prefix of 12: waits for the inter-digit timer
    h.advance(3)  # -> sales
    h.press("2")  # dial: busy -> sales again
    h.advance(6)
    h.press("0")  # back to main
    h.press("9")  # invalid (waits, then re-prompt)
    h.advance(3)
    h.press("5")  # set
    h.advance(1)
    h.press("12")  # enqueue
    h.run()
    assert h.done, "the recorded call must end"
    events = [e for _, e in h.log if not isinstance(e, Command.__args__)]  # type: ignore[attr-defined]
    replies: list[list[Command]] = []
    flow = IvrCall(MENUSET, "main", clock=clock)
    flow.start(CALL)
    for event in events:
        replies.append(flow.handle(event))
    return events, replies


def bench(calls: int) -> float:
    events, expected = record()
    # Sanity: a replay produces exactly the recorded commands.
    flow = IvrCall(MENUSET, "main", clock=clock)
    flow.start(CALL)
    assert [flow.handle(e) for e in events] == expected and flow.done
    handled = 0
    t0 = time.perf_counter()
    for _ in range(calls):
        flow = IvrCall(MENUSET, "main", clock=clock)
        flow.start(CALL)
        for event in events:
            flow.handle(event)
        handled += len(events) + 1
    elapsed = time.perf_counter() - t0
    rate = handled / elapsed
    print(
        f"{calls} calls, {len(events) + 1} events each ({handled} events) in {elapsed:.3f} s: "
        f"{rate:,.0f} events/s, {calls / elapsed:,.0f} calls/s on one core"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    bench(args.calls)


if __name__ == "__main__":
    main()
