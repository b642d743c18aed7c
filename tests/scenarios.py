"""Engine-neutral end-to-end call scenarios, as data (tests only).

Each scenario dials a number served by the test flow in ``tests/flows.py`` and walks the
caller through steps; :func:`run_scenario` runs one against any simulator implementing
``appserver.devkit.sim.caller.EngineSimulator`` (the ESL simulator, the ARI simulator), so the
FreeSWITCH and Asterisk end-to-end tests share them.

Expectations are matched in order against the call's transcript (``kind`` and ``detail``;
a detail ending in ``*`` matches by prefix, an empty detail matches anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from appserver.devkit.sim.caller import EngineSimulator, Entry, SimulatedCall

Op = Literal["expect", "press", "hangup", "absent", "present"]


@dataclass(frozen=True)
class Step:
    op: Op
    kind: str = ""
    detail: str = ""
    timeout: float = 5.0


def prompt(name: str, timeout: float = 5.0) -> Step:
    return Step("expect", "prompt_started", f"file:{name}", timeout)


def press(digits: str) -> Step:
    return Step("press", detail=digits)


def expect(kind: str, detail: str = "", timeout: float = 5.0) -> Step:
    return Step("expect", kind, detail, timeout)


def hangup() -> Step:
    return Step("hangup")


def never(kind: str, detail: str = "") -> Step:
    """Checked at the end: no such entry anywhere in the transcript."""
    return Step("absent", kind, detail)


def somewhere(kind: str, detail: str = "") -> Step:
    """Checked at the end: such an entry, in any order (e.g. a variable set while a prompt
    starts: the engines may report either first)."""
    return Step("present", kind, detail)


@dataclass(frozen=True)
class Scenario:
    name: str
    number: str
    steps: tuple[Step, ...]
    # simulated endpoints for dial targets: "answer" | "busy" | "no_answer" | "fail"
    endpoints: dict[str, str] = field(default_factory=dict)
    engines: tuple[str, ...] = ("freeswitch", "asterisk")  # where the scenario applies
    cdr: str | None = "hangup"  # the disposition of the call's one CDR (None: no CDR)


ENDPOINTS = {"1001": "answer", "1002": "busy", "1003": "no_answer"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "greeting, submenu, dial answered",
        "9999",
        (
            expect("answered"),
            prompt("ivr/welcome"),
            press("1"),
            expect("prompt_finished", "file:ivr/welcome stopped"),
            prompt("ivr/sales"),
            press("1"),
            expect("dialed", "1001"),
            expect("bridged", "1001"),
            expect("hangup", "NORMAL_CLEARING*"),
        ),
        ENDPOINTS,
        cdr="answered",
    ),
    Scenario(
        "submenu to a queue (no queue runtime: queue closed message)",
        "9999",
        (
            prompt("ivr/welcome"),
            press("2"),
            prompt("ivr/support"),
            press("1"),
            prompt("ivr/queue-closed"),
            expect("hangup", "NORMAL_CLEARING*"),
        ),
        ENDPOINTS,
        cdr="failed",
    ),
    Scenario(
        "transfer from the main menu",
        "9999",
        (prompt("ivr/welcome"), press("0"), expect("transferred", "1000"), expect("hangup")),
        ENDPOINTS,
        cdr="transferred",
    ),
    Scenario(
        "three levels deep, dial not answered, back to the menu",
        "9999",
        (
            prompt("ivr/welcome"),
            press("1"),
            prompt("ivr/sales"),
            press("3"),
            prompt("ivr/sales-deep"),
            press("1"),
            expect("dialed", "1003"),
            prompt("ivr/unavailable", timeout=8),  # the flow dials for 5 s
            prompt("ivr/sales-deep"),
            press("#"),
            expect("hangup", "NORMAL_CLEARING*"),
            never("bridged"),
        ),
        ENDPOINTS,
    ),
    Scenario(
        "busy extension, star back to main, second submenu transfer",
        "9999",
        (
            prompt("ivr/welcome"),
            press("1"),
            prompt("ivr/sales"),
            press("2"),
            expect("dialed", "1002"),
            prompt("ivr/unavailable"),
            prompt("ivr/sales"),
            press("*"),
            prompt("ivr/welcome"),
            press("2"),
            prompt("ivr/support"),
            press("2"),
            expect("transferred", "2000"),
        ),
        ENDPOINTS,
        cdr="transferred",
    ),
    Scenario(
        "invalid digit replays the menu",
        "9999",
        (
            prompt("ivr/welcome"),
            press("7"),
            prompt("ivr/invalid"),
            prompt("ivr/welcome"),
            press("0"),
            expect("transferred", "1000"),
        ),
        ENDPOINTS,
        cdr="transferred",
    ),
    Scenario(
        "three invalid digits: goodbye and hang up",
        "9999",
        (
            prompt("ivr/welcome"),
            press("7"),
            prompt("ivr/invalid"),
            press("8"),
            prompt("ivr/invalid"),
            press("5"),
            prompt("ivr/goodbye"),
            expect("prompt_finished", "file:ivr/goodbye done"),
            expect("hangup", "NORMAL_CLEARING*"),
        ),
        ENDPOINTS,
    ),
    Scenario(
        "no input: timeouts, then goodbye",
        "9999",
        (
            prompt("ivr/welcome"),
            prompt("ivr/timeout", timeout=4),
            prompt("ivr/welcome"),
            prompt("ivr/timeout", timeout=4),
            prompt("ivr/goodbye", timeout=4),
            expect("hangup", "NORMAL_CLEARING*"),
            never("dtmf"),
        ),
        ENDPOINTS,
    ),
    Scenario(
        "caller hangs up mid-prompt",
        "9999",
        (
            prompt("ivr/welcome"),
            hangup(),
            expect("prompt_finished", "file:ivr/welcome stopped"),
            expect("hangup", "NORMAL_CLEARING caller"),
            never("prompt_started", "file:ivr/timeout"),
        ),
        ENDPOINTS,
    ),
    Scenario(  # in the range the shipped dialplans hand to Callyard, served by no flow
        "number with no flow: polite message and hangup",
        "8999",
        (expect("answered"), expect("prompt_started"), expect("hangup"), never("dtmf")),
        cdr=None,  # no app took the call
    ),
    Scenario(
        "flow crashing at start: polite message and hangup",
        "9998",
        (expect("answered"), expect("prompt_started"), expect("hangup")),
        cdr="failed",
    ),
)


def t(name: str, timeout: float = 5.0) -> Step:
    """A prompt of the IVR menu set under test (tests/ivr_menus.py) starts."""
    return prompt(f"callyard-test/{name}", timeout)


def done(name: str, status: str = "done", timeout: float = 5.0) -> Step:
    return expect("prompt_finished", f"file:callyard-test/{name} {status}", timeout)


# The IVR menus of tests/ivr_menus.py, served from PostgreSQL through Redis by the workers.
IVR_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "ivr: greeting in order and complete, no input twice, exhausted",
        "8100",
        (
            expect("answered"),
            t("welcome"), done("welcome"), t("main-menu"), done("main-menu"),
            t("no-input", 6), done("no-input"), t("welcome"), done("welcome"), t("main-menu"),
            done("main-menu"), t("no-input", 6), done("no-input"),
            expect("hangup", "NORMAL_CLEARING*"),
            never("dtmf"),
        ),
    ),
    Scenario(
        "ivr: barge-in, submenu, deeper, back, main",
        "8100",
        (
            t("welcome"), press("1"), done("welcome", "stopped"), t("sales"),
            press("1"), t("deep"), somewhere("variable", "ivr_menu_path=t-main/t-sales/t-deep"),
            press("*"), t("sales"), press("0"), t("welcome"), hangup(),
            expect("hangup", "NORMAL_CLEARING caller"),
        ),
    ),
    Scenario(
        "ivr: set a variable on the channel, play, repeat",
        "8100",
        (
            t("welcome"), press("5"), t("noted"), done("noted"),
            press("6"), t("hours"), done("hours"), press("7"), t("welcome"), hangup(),
            somewhere("variable", "vip=yes"),
        ),
    ),
    Scenario(
        "ivr: multi-digit entry: full length, terminator, inter-digit timeout, invalid",
        "8100",
        (
            t("welcome"), press("8"), t("enter-pin"), press("1234"), t("pin-ok"),
            done("pin-ok"), press("12#"), t("short-ok"), done("short-ok"),
            press("12"), t("short-ok", 6), done("short-ok"),
            press("5"), t("invalid", 6), t("enter-pin"), hangup(),
        ),
    ),
    Scenario("ivr: schedule open", "8101", (t("open"), hangup(), never("prompt_started",
                                                                       "file:callyard-test/closed"))),
    Scenario(
        "ivr: schedule closed",
        "8102",
        (somewhere("variable", "ivr_schedule=closed"), t("closed"), done("closed"), hangup(),
         never("prompt_started", "file:callyard-test/open")),
    ),
    Scenario(
        "ivr: holiday",
        "8103",
        (somewhere("variable", "ivr_schedule=holiday"), t("holiday"), done("holiday"), hangup(),
         never("prompt_started", "file:callyard-test/closed")),
    ),
    Scenario(
        "ivr: dial an extension that answers",
        "8100",
        (t("welcome"), press("3"), expect("dialed", "1001"), expect("bridged", "1001"),
         expect("hangup", "NORMAL_CLEARING*", timeout=8), never("prompt_started",
                                                                "file:callyard-test/invalid")),
        ENDPOINTS,
        cdr="answered",
    ),
    Scenario(
        "ivr: dial a busy extension, back to the menu",
        "8100",
        (t("welcome"), press("4"), expect("dialed", "1002"), t("welcome"), hangup(),
         somewhere("variable", "ivr_dial_result=busy"), never("bridged")),
        ENDPOINTS,
    ),
    Scenario(
        "ivr: transfer into the dialplan",
        "8100",
        (t("welcome"), press("0"), expect("transferred", "1000"), expect("hangup")),
        cdr="transferred",
    ),
    Scenario(
        "caller hangs up while the dialled party rings",
        "9999",
        (prompt("ivr/welcome"), press("1"), prompt("ivr/sales"), press("3"),
         prompt("ivr/sales-deep"), press("1"), expect("dialed", "1003"), hangup(),
         expect("hangup", "NORMAL_CLEARING caller"), never("bridged")),
        ENDPOINTS,
    ),
    Scenario(
        "ivr: spoken greeting (text to speech)",
        "8104",
        (expect("prompt_started", "tts:Thank you for calling."),
         expect("prompt_finished", "tts:Thank you for calling. done"), hangup()),
        engines=("freeswitch",),
    ),
    Scenario(
        "queue: music on hold and position announcements, caller gives up",
        "8110",
        (
            expect("moh", "default"), expect("moh", "", timeout=12),
            prompt("queue/position"), expect("prompt_finished", "file:queue/position done"),
            expect("prompt_started", "number:1"), expect("moh", "default"),
            hangup(), expect("hangup", "NORMAL_CLEARING caller"),
        ),
        cdr="abandoned",
    ),
)


def _matches(entry: Entry, kind: str, detail: str) -> bool:
    if entry.kind != kind:
        return False
    if not detail:
        return True
    if detail.endswith("*"):
        return entry.detail.startswith(detail[:-1])
    return entry.detail == detail


async def walk(call: SimulatedCall, steps: tuple[Step, ...], time_scale: float = 1.0) -> None:
    """Run the steps on a placed call; raises AssertionError/TimeoutError on a mismatch.
    ``time_scale`` stretches every step's timeout (real engines play real-length prompts)."""
    pos = 0
    for step in steps:
        if step.op == "press":
            await call.press(step.detail)
        elif step.op == "hangup":
            await call.hangup()
        elif step.op == "expect":
            start = pos
            entry = await call.transcript.wait_for(
                lambda e, s=step, p=start: (
                    _matches(e, s.kind, s.detail)
                    and any(x is e for x in call.transcript.entries[p:])
                ),
                step.timeout * time_scale,
            )
            pos = next(i for i, x in enumerate(call.transcript.entries) if x is entry) + 1
    await call.wait_ended(10 * time_scale)
    for step in steps:
        found = [e for e in call.transcript.entries if _matches(e, step.kind, step.detail)]
        if step.op == "absent":
            assert not found, f"unexpected {step.kind} {step.detail}: {call.transcript.lines()}"
        elif step.op == "present":
            assert found, f"no {step.kind} {step.detail}: {call.transcript.lines()}"


async def run_scenario(
    sim: EngineSimulator, scenario: Scenario, caller: str = "+15550100", time_scale: float = 1.0
) -> SimulatedCall:
    call = await sim.place_call(scenario.number, caller=caller)
    await walk(call, scenario.steps, time_scale)
    return call
