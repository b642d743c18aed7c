"""Simulated callers, shared by the FreeSWITCH and Asterisk simulators.

A test reads like a phone call and runs unchanged against either engine's simulator:

    call = await sim.place_call("9999", caller="+15550100")
    await call.wait_for_prompt("file:ivr/welcome")
    await call.press("1")
    await call.wait_for_prompt("file:ivr/sales")
    await call.hangup()
    assert call.prompts() == ["file:ivr/welcome", "file:ivr/sales"]

Prompts are recorded in the engine-neutral form ``kind:value`` of :class:`ivr.calls.Prompt`
(``file:ivr/welcome``, ``tts:Hello``, ``digits:42``, ``number:42``); each simulator turns
its engine's syntax (``playback ivr/welcome.wav``, ``sound:ivr/welcome``) back into that form.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

EntryKind = Literal[
    "ringing",  # the call reached the engine
    "answered",
    "prompt_started",  # detail: "kind:value"
    "prompt_finished",  # detail: "kind:value status" (status: done | stopped | failed)
    "dtmf",  # detail: the digit pressed by the caller
    "moh",  # detail: music-on-hold class started ("" when stopped)
    "queued",  # detail: queue name
    "dialed",  # detail: dial target (extension / agent / endpoint)
    "bridged",  # detail: the other party
    "held",  # detail: "on" when the connected call was put on hold, "off" when resumed
    "unbridged",  # detail: the other party, when its leg ended (hung up) and the caller stays
    "transferred",  # detail: destination
    # a supervisor's leg on the connected call: "<their room> heard_by=nobody|agent|caller,agent"
    # (who hears the supervisor; they hear both), "<their room> gone" when it ends
    "supervised",
    "variable",  # detail: "name=value"
    "beep",  # the engine beeped (before a recording)
    "recording",  # detail: "<name> started", then "<name> <seconds>s <dtmf|timeout|hangup>"
    "hangup",  # detail: "cause by" where by is caller | engine | app
]


class Signal:
    """``asyncio.Event``'s set / clear / is_set / wait, plus :func:`first_of`: waiting on
    several signals with a timeout costs one future and one timer (asyncio.wait on Events
    takes a task per Event), which counts at thousands of simulated calls."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _wake(waiter)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        while not self._flag:
            await first_of((self,), None)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def first_of(signals: Sequence[Signal], timeout: float | None) -> None:
    """Wait until one of ``signals`` is set or ``timeout`` seconds pass."""
    if any(s._flag for s in signals):
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    for s in signals:
        s._waiters.append(waiter)
    timer = None if timeout is None else loop.call_later(max(timeout, 0), _wake, waiter)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for s in signals:
            with contextlib.suppress(ValueError):
                s._waiters.remove(waiter)


@dataclass(frozen=True, slots=True)
class Entry:
    at: float  # seconds since the call was placed
    kind: EntryKind
    detail: str = ""


@dataclass
class Transcript:
    """What happened on a simulated call, in order. Appended to by the simulator."""

    started: float = field(default_factory=time.monotonic)
    entries: list[Entry] = field(default_factory=list)
    _changed: Signal = field(default_factory=Signal)

    def add(self, kind: EntryKind, detail: str = "") -> None:
        self.entries.append(Entry(round(time.monotonic() - self.started, 4), kind, detail))
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[Entry], bool], timeout: float = 5.0, start: int = 0
    ) -> Entry:
        """Wait until an entry from index ``start`` on matches ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for entry in self.entries[seen:]:
                if predicate(entry):
                    return entry
            seen = len(self.entries)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"nothing matched within {timeout}s; transcript: {self.lines()}")
            self._changed.clear()
            # in a task of its own as before: tests that look at the worker right after an
            # entry count on the wake-up coming no sooner
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def lines(self) -> list[str]:
        return [f"{e.kind} {e.detail}".strip() for e in self.entries]


class SimulatedCall(ABC):
    """One caller on a simulated engine. Subclassed by each engine simulator."""

    call_id: str
    transcript: Transcript

    @abstractmethod
    async def press(self, digits: str, gap: float = 0.05) -> None:
        """Send DTMF digits one by one, ``gap`` seconds apart."""

    @abstractmethod
    async def hangup(self) -> None:
        """The caller hangs up."""

    @property
    def ended(self) -> bool:
        return any(e.kind == "hangup" for e in self.transcript.entries)

    def prompts(self) -> list[str]:
        """Prompts the caller heard start, in order (``kind:value``)."""
        return [e.detail for e in self.transcript.entries if e.kind == "prompt_started"]

    async def wait_for_prompt(self, prompt: str, timeout: float = 5.0) -> Entry:
        return await self.transcript.wait_for(
            lambda e: e.kind == "prompt_started" and e.detail == prompt, timeout
        )

    async def wait_for(self, kind: EntryKind, timeout: float = 5.0) -> Entry:
        return await self.transcript.wait_for(lambda e: e.kind == kind, timeout)

    async def wait_ended(self, timeout: float = 10.0) -> Entry:
        return await self.wait_for("hangup", timeout)


class EngineSimulator(Protocol):
    """What both simulators offer to tests, `callyard dev` and the load generator."""

    async def place_call(
        self, to: str, caller: str = "+15550100", caller_name: str = ""
    ) -> SimulatedCall: ...

    @property
    def originated(self) -> Sequence[tuple[str, SimulatedCall | None]]:
        """Calls the engine placed to a phone (a callback's customer), in order: the number
        dialled and the call as that phone has it (None: never answered)."""
        ...
