""":class:`QueueingFlow`: runs any call flow and takes over the call while it is queued.

The queueing layer of every call's flow (:mod:`appserver.worker.pipeline`): when the inner
flow (e.g. the IVR) returns ``Enqueue``, a :class:`~appserver.queues.caller_flow.CallerFlow`
from the queue runtime takes the call; when that ends, its terminal command (another
``Enqueue``, ``Transfer``, ``Hangup``) is carried out, or its
:class:`~ivr.calls.QueueResult` is handed back to the inner flow, which continues (for
example to a menu on overflow). The layers outside never see that ``Enqueue`` nor that
result: an ``observer`` (the CDRs) hears of both. Pure: no I/O of its own.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

from appserver.queues.caller_flow import CALLBACK_VARIABLE, CallerFlow
from appserver.queues.model import TakenOver
from ivr.calls import (
    CallFlow,
    CallInfo,
    Command,
    Enqueue,
    Event,
    Hangup,
    HungUp,
    QueueResult,
    SetVariable,
    Transfer,
)


class CallerFlowFactory(Protocol):
    def caller_flow(self, call: CallInfo, enqueue: Enqueue) -> CallerFlow | None:
        """A flow for this caller in ``enqueue.queue``, or None if the queue is unknown."""
        ...

    def resumed_caller(self, call: CallInfo) -> tuple[CallerFlow, TakenOver] | None:
        """The flow going on with the stay of a caller this worker took over from a dead
        one, or None (every other call)."""
        ...

    def callback_caller(self, call: CallInfo) -> tuple[CallerFlow, str] | None:
        """The flow of a callback's customer who answered, and the callback's entry; None
        for every other call."""
        ...


class QueueObserver(Protocol):
    """Told what the layers outside do not see: the inner flow asked for ``queue``; the
    stay is over and the inner flow gets ``result``."""

    def queue_entered(self, call_id: str, queue: str) -> None: ...

    def queue_left(self, call_id: str, result: QueueResult) -> None: ...

    def queue_taken_over(self, call_id: str, taken: TakenOver) -> None: ...


class ResumableFlow(Protocol):
    """An inner flow that can begin where a caller of ``queue`` waits for its result (the
    IVR: in the menu that queued them), for a call taken over from a dead worker."""

    def resume_queued(self, call: CallInfo, queue: str, menu_path: str) -> list[Command]: ...


class CallbackEnd:
    """The app of a callback's customer: the queueing layer connects them
    (:meth:`QueueingFlow._call_back`); this begins only if that stay ends with the call still
    up (the callback was gone, the agent hung up first), and ends the call."""

    def __init__(self) -> None:
        self.done = False

    def start(self, call: CallInfo) -> list[Command]:
        self.done = True
        return [Hangup()]

    def handle(self, event: Event) -> list[Command]:
        return []


def callback_app(call: CallInfo) -> CallFlow | None:
    """The first app of every worker: takes the channels originated to callback customers."""
    return CallbackEnd() if call.variables.get(CALLBACK_VARIABLE) else None


class QueueingFlow:
    def __init__(self, inner: CallFlow, runtime: CallerFlowFactory,
                 observer: QueueObserver | None = None) -> None:
        self.inner = inner
        self.runtime = runtime
        self.observer = observer
        self.caller: CallerFlow | None = None
        self.call: CallInfo | None = None
        self._finished = False
        self._hung_up = False
        self._queue = ""  # the queue the inner flow asked for (results are reported for it)
        self._variables: dict[str, str] = {}  # set by the inner flow, seen by the queue
        self._inner_started = True  # False: a taken-over call, its inner flow not begun

    @property
    def done(self) -> bool:
        return self._finished or (self.caller is None and self.inner.done)

    def start(self, call: CallInfo) -> list[Command]:
        self.call = call
        resumed = self.runtime.resumed_caller(call)
        if resumed is not None:
            return self._resume(call, *resumed)
        callback = self.runtime.callback_caller(call)
        if callback is not None:
            return self._call_back(call, *callback)
        return self._route(self.inner.start(call))

    def _call_back(self, call: CallInfo, flow: CallerFlow, entry: str) -> list[Command]:
        """A callback's customer answered: connected to the agent who accepted it, in its
        queue. The inner flow begins only if the stay ends without the call ending."""
        self._queue = flow.config.name
        if self.observer is not None:
            self.observer.queue_entered(call.call_id, flow.config.name)
        self._inner_started = False
        self.caller = flow
        return self._after_caller(flow.start_callback(call, entry), None)

    def _resume(self, call: CallInfo, flow: CallerFlow, taken: TakenOver) -> list[Command]:
        """A caller taken over from a dead worker goes on waiting in its queue. The inner
        flow begins where it waits for the result when it can (:class:`ResumableFlow`),
        else from its start once a result needs it."""
        self._queue = taken.queue
        if self.observer is not None:
            self.observer.queue_taken_over(call.call_id, taken)
        resume = getattr(self.inner, "resume_queued", None)
        cmds = resume(call, taken.queue, taken.menu_path) if resume is not None else []
        self._inner_started = resume is not None
        self.caller = flow
        waited = max(0.0, time.time() - taken.joined_ms / 1000)
        return cmds + self._after_caller(flow.resume(call, waited), None)

    def handle(self, event: Event) -> list[Command]:
        if self._finished:
            return []
        if isinstance(event, HungUp):
            self._hung_up = True
        if self.caller is None:
            return self._route(self.inner.handle(event))
        return self._after_caller(self.caller.handle(event), event)

    def _route(self, cmds: list[Command], chained: bool = False) -> list[Command]:
        for i, cmd in enumerate(cmds):
            if isinstance(cmd, Enqueue):
                return cmds[:i] + self._enter(cmd, chained)
            if isinstance(cmd, SetVariable):
                self._variables[cmd.name] = cmd.value
        return cmds

    def _enter(self, cmd: Enqueue, chained: bool) -> list[Command]:
        assert self.call is not None
        if not chained:
            self._queue = cmd.queue
            if self.observer is not None:
                self.observer.queue_entered(self.call.call_id, cmd.queue)
        call = replace(self.call, variables={**self.call.variables, **self._variables})
        flow = self.runtime.caller_flow(call, cmd)
        if flow is None:
            return self._route(self._hand_back(QueueResult(cmd.queue, "failed", "no such queue")))
        self.caller = flow
        return self._after_caller(flow.start(call), None)

    def _hand_back(self, result: QueueResult) -> list[Command]:
        """The stay is over: the inner flow gets ``result`` (and the observer hears it)."""
        if self.observer is not None and self.call is not None:
            self.observer.queue_left(self.call.call_id, result)
        if not self._inner_started:
            return self._begin_inner(result)
        return self.inner.handle(result)

    def _begin_inner(self, result: QueueResult) -> list[Command]:
        """The stay of a taken-over call ended and its inner flow never began: an answered
        call is over; any other outcome starts the inner flow from the top."""
        assert self.call is not None
        self._inner_started = True
        if result.outcome == "answered":
            self._finished = True
            return [Hangup()]
        return self.inner.start(self.call)

    def _after_caller(self, cmds: list[Command], event: Event | None) -> list[Command]:
        caller = self.caller
        if caller is None or not caller.done:
            return cmds
        self.caller = None
        if cmds and isinstance(cmds[-1], Enqueue):
            return self._route(cmds, chained=True)
        if cmds and isinstance(cmds[-1], Transfer | Hangup):
            self._finished = True
            return cmds
        if self._hung_up:
            if not self._inner_started:
                self._finished = True
                return cmds
            return cmds + self.inner.handle(event if isinstance(event, HungUp) else HungUp())
        assert caller.result is not None
        # After overflow chains the result still names the queue the inner flow asked for.
        result = replace(caller.result, queue=self._queue or caller.result.queue)
        return cmds + self._route(self._hand_back(result))
