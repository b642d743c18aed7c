"""A simulated call into a menu set that is not live ("Try it" in the admin menu editor).

The call runs the compiled set in the IVR state machine (the one the workers run) with
virtual time, replayed from the start on every request from the caller's steps so far:
key presses, or ``"silence"`` (the caller waits until something happens). No engine is
involved, so nothing is stored and no caller can reach it. The caller listens to every
prompt to its end before acting; a queue or dial ends the trial there (where it would go).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ivr.calls import CallInfo, Dial, Enqueue, Hangup, Transfer
from ivr.compile import compile_menuset
from ivr.model import ExtensionDef, MenuSource
from ivr.testing import FlowHarness

SILENCE = "silence"
MAX_WAIT = 600.0  # virtual seconds a step may take before the trial gives up on it
TRIAL_CALLER = "+15550100"


def caption(spec: str) -> str:
    """What the caller hears, as words: ``tts:Hello`` -> ``Hello``."""
    kind, _, value = spec.partition(":")
    if kind == "tts":
        return value
    if kind == "file":
        return f"[recording {value}]"
    if kind == "digits":
        return " ".join(value)
    if kind == "silence":
        return f"[{int(value) / 1000:g} s of silence]" if value.isdigit() else "[silence]"
    return value


@dataclass
class Trial:
    transcript: list[dict[str, Any]]
    state: str  # listening | ended | queued | dialling | transferred
    menu: str | None


def _entry_number(source: MenuSource) -> str:
    taken = {e.number for e in source.extensions}
    return next(n for n in (f"*#*{i}" for i in range(1, 10_000)) if n not in taken)


def _heard(harness: FlowHarness, since: int) -> list[dict[str, Any]]:
    return [{"kind": "heard", "prompt": p, "text": caption(p)} for p in harness.played[since:]]


def _settle(harness: FlowHarness) -> None:
    harness.advance_until(lambda: not harness.playing, MAX_WAIT)


def _wait_for_something(harness: FlowHarness) -> None:
    """The caller presses nothing: time passes until a prompt plays or the call ends."""
    seen = len(harness.played)
    harness.advance_until(lambda: len(harness.played) > seen or harness.done, MAX_WAIT)


def _outcome(harness: FlowHarness) -> tuple[str, str | None]:
    command = harness.terminal
    if harness.waiting is not None and isinstance(command, Enqueue):
        return "queued", f"handed to queue {command.queue} (priority {command.priority})"
    if harness.waiting is not None and isinstance(command, Dial):
        return "dialling", f"dialling {command.target}"
    if isinstance(command, Transfer):
        return "transferred", f"transferred to {command.destination}"
    if harness.done or isinstance(command, Hangup):
        return "ended", "the call ended"
    return "listening", None


def run_trial(source: MenuSource, menu: str, steps: list[str]) -> Trial:
    """Call ``menu`` of ``source`` (validated: raises ``MenuSetInvalid``) and play ``steps``."""
    number = _entry_number(source)
    source = dataclasses.replace(
        source, extensions=(*source.extensions, ExtensionDef(number, "menu", menu)))
    flow = compile_menuset(source).flow_for(number)
    assert flow is not None  # the extension was just added
    harness = FlowHarness(flow, call=CallInfo("trial", "test", TRIAL_CALLER, number),
                          queue_outcome=lambda e: None, dial_outcome=lambda d: None)
    harness.start()
    _settle(harness)
    transcript = _heard(harness, 0)
    for step in steps:
        if _outcome(harness)[0] != "listening":
            break
        seen = len(harness.played)
        if step == SILENCE:
            transcript.append({"kind": "silence", "text": "(caller stays silent)"})
            _wait_for_something(harness)
        else:
            transcript.append({"kind": "pressed", "text": step})
            harness.press(step)
        _settle(harness)
        transcript += _heard(harness, seen)
    state, detail = _outcome(harness)
    if detail:
        transcript.append({"kind": "end", "text": detail})
    return Trial(transcript, state, harness.variables.get("ivr_menu"))
