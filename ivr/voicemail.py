"""A caller leaving a voicemail message: the ``voicemail`` action, pure like the machine.

greeting (the mailbox's, or the standard one; ``#`` skips it) -> beep -> record up to the
mailbox's ``max_seconds``, ``#`` ends it -> with ``review``: "1 keeps it, 2 records it again"
(no key within :data:`~ivr.model.VOICEMAIL_REVIEW_SECONDS` keeps it) -> "saved, goodbye",
sent with ``Hangup(after_play=...)``: the engine hangs up as it ends, with no round trip of its
``PlayFinished`` through the worker. A caller who hangs up at any point after the beep leaves
the message recorded so far (the engine keeps the file; :class:`appserver.cdr.flow.CdrFlow`
stores it). A recording the engine could not make ends the call.
"""

from __future__ import annotations

from collections.abc import Callable

from ivr.calls import (
    CancelTimer,
    Command,
    Dtmf,
    Event,
    Hangup,
    Play,
    PlayFinished,
    Prompt,
    Record,
    RecordFinished,
    StartTimer,
    StopPlay,
    TimerFired,
)
from ivr.model import (
    VOICEMAIL_GREETING,
    VOICEMAIL_REVIEW,
    VOICEMAIL_REVIEW_SECONDS,
    VOICEMAIL_SAVED,
    Mailbox,
    parse_prompt,
)

_GREETING = (parse_prompt(VOICEMAIL_GREETING),)
_REVIEW = (parse_prompt(VOICEMAIL_REVIEW),)
_SAVED = (parse_prompt(VOICEMAIL_SAVED),)
_TIMER = "ivr.voicemail-review"

# Steps.
_GREET, _RECORD, _REVIEW_STEP, _BYE = "greeting", "recording", "review", "bye"


def message_name(mailbox: str, call_id: str) -> str:
    """The recording's name (no extension): one message per call and mailbox. Flat, in the
    engine's recordings directory: FreeSWITCH's ``record`` creates no directories."""
    return f"voicemail-{mailbox}-{call_id}"


class Voicemail:
    __slots__ = ("_new_id", "_play", "_render", "box", "language", "name", "step")

    def __init__(
        self,
        box: Mailbox,
        call_id: str,
        language: str,
        new_id: Callable[[], str],
        render: Callable[[tuple[Prompt, ...]], tuple[Prompt, ...]],
    ) -> None:
        self.box = box
        self.name = message_name(box.name, call_id)
        self.language = language
        self._new_id = new_id
        self._render = render
        self._play: str | None = None
        self.step = _GREET

    def start(self) -> list[Command]:
        greeting = self._render(self.box.greeting) if self.box.greeting else _GREETING
        if not greeting:
            return self._record()
        return self._say(greeting, "#")  # a # skips to the beep

    def handle(self, event: Event) -> tuple[list[Command], bool]:
        """The commands for ``event`` and whether the call is over (a Hangup was sent)."""
        step = self.step
        if type(event) is PlayFinished:
            if event.play_id != self._play:
                return [], False
            self._play = None
            if step == _GREET:
                return self._record(), False
            if step == _REVIEW_STEP:
                return [StartTimer(_TIMER, VOICEMAIL_REVIEW_SECONDS)], False
            return [], False  # the goodbye's is never delivered (Hangup(after_play))
        if type(event) is Dtmf:
            return self._on_digits(event.digits)
        if type(event) is RecordFinished:
            if step != _RECORD or event.record_id != self._record_id:
                return [], False
            if event.status == "failed":
                return [Hangup("NORMAL_TEMPORARY_FAILURE")], True
            if self.box.review:
                self.step = _REVIEW_STEP
                return self._say(_REVIEW, "12"), False
            return self._bye(), True
        if type(event) is TimerFired and event.name == _TIMER and step == _REVIEW_STEP:
            return self._bye(), True
        return [], False

    # ------------------------------------------------------------------ steps
    @property
    def _record_id(self) -> str:
        return f"vm:{self.name}"

    def _on_digits(self, digits: str) -> tuple[list[Command], bool]:
        if self.step == _GREET and "#" in digits and self._play is not None:
            return [StopPlay(self._play), *self._record()], False
        if self.step != _REVIEW_STEP:
            return [], False  # while recording, # is the engine's terminator
        for digit in digits:
            if digit in "12":
                # the timer runs once the review prompt has played out
                out: list[Command] = [
                    StopPlay(self._play) if self._play is not None else CancelTimer(_TIMER)
                ]
                if digit == "1":
                    return [*out, *self._bye()], True
                return [*out, *self._record()], False
        return [], False

    def _say(self, prompts: tuple[Prompt, ...], stop_keys: str) -> list[Command]:
        self._play = self._new_id()
        return [Play(self._play, prompts, stop_keys, self.language)]

    def _record(self) -> list[Command]:
        self._play = None
        self.step = _RECORD
        return [Record(self._record_id, self.name, self.box.max_seconds, True, "#",
                       self.box.name)]

    def _bye(self) -> list[Command]:
        """"Saved, goodbye" (not interruptible), and the end: nothing follows it, so the
        engine hangs up as it ends (``Hangup(after_play)``); its PlayFinished never comes."""
        self.step = _BYE
        self._play = None
        play_id = self._new_id()
        return [Play(play_id, _SAVED, "", self.language), Hangup(after_play=play_id)]
