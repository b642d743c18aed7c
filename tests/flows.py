"""A small hand-written three-level menu CallFlow for engine end-to-end tests (test only).

Loaded by workers as ``flows:factory`` (``tests`` on ``PYTHONPATH``). Numbers:
``9999`` the menu, ``9998`` a flow that crashes at start, anything else: no flow (None).

    main (ivr/welcome):   1 -> sales, 2 -> support, 0 -> transfer 1000, 9 -> queue general
    sales (ivr/sales):    1 -> dial 1001, 2 -> dial 1002, 3 -> sales-deep, * -> main
    support (ivr/support):1 -> queue support, 2 -> transfer 2000
    sales-deep (ivr/sales-deep): 1 -> dial 1003, # -> hang up
Invalid digit -> ivr/invalid then the menu again; no digit within TIMEOUT -> ivr/timeout
then the menu again; the third failure -> ivr/goodbye and hang up. A dial that is not
answered -> ivr/unavailable and back to the menu; an answered one hangs up after the bridge.
"""

from __future__ import annotations

import os

from ivr import calls as c

# seconds without a digit before the menu counts a timeout (the benchmark lengthens it)
TIMEOUT = float(os.environ.get("CALLYARD_TEST_FLOW_TIMEOUT", "1.0"))
MAX_FAILURES = 3

MENUS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "main": (
        "ivr/welcome",
        {"1": ("menu", "sales"), "2": ("menu", "support"), "0": ("transfer", "1000"),
         "9": ("queue", "general")},
    ),
    "sales": (
        "ivr/sales",
        {"1": ("dial", "1001"), "2": ("dial", "1002"), "3": ("menu", "sales-deep"),
         "*": ("menu", "main")},
    ),
    "support": ("ivr/support", {"1": ("queue", "support"), "2": ("transfer", "2000")}),
    "sales-deep": ("ivr/sales-deep", {"1": ("dial", "1003"), "#": ("hangup", "")}),
}  # fmt: skip


def _play(play_id: str, name: str, stop_keys: str) -> c.Play:
    return c.Play(play_id, (c.Prompt("file", name),), stop_keys)


class MenuFlow:
    def __init__(self) -> None:
        self.menu = "main"
        self.failures = 0
        self.playing: str | None = None
        self.seq = 0
        self.closing = False
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def _enter(self, menu: str) -> list[c.Command]:
        self.menu = menu
        return [*self._prompt(MENUS[menu][0]), c.StartTimer("input", TIMEOUT)]

    def _prompt(self, name: str, stop_keys: str = c.ALL_KEYS) -> list[c.Command]:
        """A prompt any key stops (see handle), but the last words of a closing call."""
        self.seq += 1
        self.playing = f"p{self.seq}"
        return [_play(self.playing, name, stop_keys)]

    def _fail(self, prompt: str) -> list[c.Command]:
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.closing = True
            return [c.CancelTimer("input"), *self._prompt("ivr/goodbye", "")]
        return self._prompt(prompt) + self._enter(self.menu)

    def start(self, call: c.CallInfo) -> list[c.Command]:
        return [c.Answer(), c.SetVariable("callyard_flow", "menu"), *self._enter("main")]

    def handle(self, event: c.Event) -> list[c.Command]:
        if isinstance(event, c.HungUp):
            self._done = True
            return []
        if isinstance(event, c.PlayFinished):
            if event.play_id == self.playing:
                self.playing = None
                if self.closing:
                    self._done = True
                    return [c.Hangup()]
            return []
        if self.closing:
            return []
        if isinstance(event, c.TimerFired) and event.name == "input":
            return self._fail("ivr/timeout")
        if isinstance(event, c.Dtmf):
            out: list[c.Command] = [c.CancelTimer("input")]
            if self.playing:
                out.append(c.StopPlay(self.playing))
                self.playing = None
            option = MENUS[self.menu][1].get(event.digits)
            if option is None:
                return out + self._fail("ivr/invalid")
            return out + self._action(*option)
        if isinstance(event, c.DialResult):
            if event.outcome == "answered":
                self._done = True
                return [c.Hangup()]
            return self._prompt("ivr/unavailable") + self._enter(self.menu)
        if isinstance(event, c.QueueResult):
            self.closing = True
            return self._prompt("ivr/queue-closed", "")
        return []

    def _action(self, kind: str, target: str) -> list[c.Command]:
        self.failures = 0
        if kind == "menu":
            return self._enter(target)
        if kind == "dial":
            return [c.Dial(target, timeout=5)]
        if kind == "transfer":
            self._done = True
            return [c.Transfer(target)]
        if kind == "queue":
            return [c.Enqueue(target)]
        self._done = True
        return [c.Hangup()]


class CrashingFlow:
    done = False

    def start(self, call: c.CallInfo) -> list[c.Command]:
        raise RuntimeError("this flow always fails")

    def handle(self, event: c.Event) -> list[c.Command]:
        return []


def factory(call: c.CallInfo) -> c.CallFlow | None:
    if call.called == "9999":
        return MenuFlow()
    if call.called == "9998":
        return CrashingFlow()
    return None
