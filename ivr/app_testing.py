"""Unit-test call-flow apps without an engine: place a call, press digits, check the result.

Built on :class:`ivr.testing.FlowHarness` (virtual time, strict driver-contract checks), so a
test runs in milliseconds and a flow that breaks the contract fails it::

    call = place_call(app, "8100", dial={"1001": "answered"})
    call.press("1234#")          # when the flow listens; then hear its answer
    call.run()                   # until the call ends
    call.assert_played("orders/status-shipped")
    assert call.dialed == ["1001"] and call.ended

Dial and queue outcomes come from ``dial`` / ``queue``: a mapping target -> outcome or a
function; unlisted targets get ``no_answer`` / ``failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ivr.app import App, GeneratorFlow, to_prompt
from ivr.calls import CallInfo, Command, Dial, Enqueue, Hangup, Prompt, Transfer
from ivr.testing import FlowHarness

Outcomes = Mapping[str, str | None] | Callable[[Any], str | None] | None


def _outcome(spec: Outcomes, default: str) -> Callable[[Any], str | None]:
    if spec is None:
        return lambda _: default
    if callable(spec):
        return spec
    table = dict(spec)
    return lambda cmd: table.get(cmd.target if isinstance(cmd, Dial) else cmd.queue, default)


class AppCall:
    """One simulated call to an :class:`~ivr.app.App` (see the module docstring)."""

    def __init__(
        self,
        app: App,
        called: str,
        *,
        caller: str = "+15550100",
        variables: Mapping[str, str] | None = None,
        dial: Outcomes = None,
        queue: Outcomes = None,
        prompt_seconds: float = 1.0,
        result_delay: float = 1.0,
    ) -> None:
        info = CallInfo(call_id=f"test-{called}", engine="test", caller=caller, called=called,
                        variables=dict(variables or {}))
        flow = app(info)
        if flow is None:
            raise LookupError(f"{app.name} has no route for {called!r}")
        self.flow: GeneratorFlow = flow
        self.harness = FlowHarness(
            flow, info, prompt_seconds=prompt_seconds, result_delay=result_delay,
            dial_outcome=_outcome(dial, "no_answer"), queue_outcome=_outcome(queue, "failed"),
        )
        self.harness.start()

    # ---------------------------------------------------------------- the caller
    def press(self, digits: str, gap: float = 0.2, wait: float = 60.0) -> None:
        """Wait (up to ``wait`` s) until the flow listens for digits, press them ``gap``
        seconds apart, then :meth:`listen` to the answer. AssertionError if the call ends
        or the flow never listens."""
        for digit in digits:
            if not self.harness.advance_until(lambda: self.flow.accepts_digits, wait):
                raise AssertionError(f"the flow was not listening for {digit!r} "
                                     f"(ended: {self.ended}); played {self.played}")
            self.harness.press(digit)
            self.harness.advance(gap)
        self.listen(wait)

    def listen(self, wait: float = 60.0) -> None:
        """Let the call go on until the flow collects digits again or the call ends."""
        self.harness.advance_until(lambda: self.flow.waiting_on == "collect", wait)

    def press_now(self, digits: str) -> None:
        """Press at once, whether or not the flow listens (digits may be dropped)."""
        self.harness.press(digits)

    def wait(self, seconds: float) -> None:
        self.harness.advance(seconds)

    def hangup(self) -> None:
        self.harness.hangup()

    def run(self, limit: float = 3600.0) -> None:
        """Let the call go on (nobody presses anything) until it ends or waits on nothing."""
        self.harness.run(limit)

    # ---------------------------------------------------------------- what happened
    @property
    def played(self) -> list[str]:
        """Prompts started, as ``kind:value`` (``file:orders/welcome``, ``digits:42``)."""
        return list(self.harness.played)

    def assert_played(self, *prompts: str | Prompt) -> None:
        """These prompts were played in this order (others may come between them)."""
        wanted = [f"{p.kind}:{p.value}" for p in map(to_prompt, prompts)]
        it = iter(self.harness.played)
        missing = [w for w in wanted if not any(w == p for p in it)]
        assert not missing, f"not played in order: {missing}; played {self.played}"

    @property
    def variables(self) -> dict[str, str]:
        return dict(self.harness.variables)

    @property
    def commands(self) -> list[Command]:
        return list(self.harness.commands)

    @property
    def dialed(self) -> list[str]:
        return [cmd.target for cmd in self.harness.commands if isinstance(cmd, Dial)]

    @property
    def enqueued(self) -> list[str]:
        return [cmd.queue for cmd in self.harness.commands if isinstance(cmd, Enqueue)]

    @property
    def transferred_to(self) -> str | None:
        t = self.harness.terminal
        return t.destination if isinstance(t, Transfer) else None

    @property
    def hangup_cause(self) -> str | None:
        """The cause of the app's Hangup (None if it did not hang up)."""
        t = self.harness.terminal
        return t.cause if isinstance(t, Hangup) else None

    @property
    def ended(self) -> bool:
        return self.harness.done

    @property
    def error(self) -> str | None:
        """Why the runner ended the call (exception, timeout...), or None."""
        return self.flow.error


def place_call(app: App, called: str, **options: Any) -> AppCall:
    """Place a simulated call to ``called`` on ``app`` (options: see :class:`AppCall`)."""
    return AppCall(app, called, **options)
