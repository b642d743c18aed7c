"""Each call's flow, built in one place: the app inside the worker's layers.

Both workers get their flow factory from :func:`worker_pipeline`. Like Starlette's
middleware stack, the layers are one ordered list, outermost first, each wrapping the next:

1. CDR (:class:`appserver.cdr.flow.CdrFlow`): sees every event in and every command out and
   emits the call's one record;
2. browser-agent bridge (:class:`appserver.agents.bridge.BrowserAgentBridge`): a dial of a
   browser agent becomes a dial of the call's LiveKit room;
3. queueing (:class:`appserver.queues.flow.QueueingFlow`): takes the call over while it waits
   in a queue, and tells the CDRs what it keeps from the layers outside;
4. the app: the first app of ``--flow-factory`` / ``CALLYARD_APPS`` that takes the call, the
   IVR menus last (:class:`appserver.apps.AppRouter`).

A key press (``Dtmf``) goes in through the layers' ``handle`` and the app's commands come
back out the same way: the CDR layer looks the event and each command up by type, the
bridge and the queueing layer hand them on untouched unless an agent or a queue is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from appserver.agents.bridge import BrowserAgentBridge
from ivr.calls import CallFlow, CallInfo

if TYPE_CHECKING:
    from appserver.apps import FlowFactory
    from appserver.cdr.flow import CdrCalls
    from appserver.queues.runtime import QueueRuntime

Layer = Callable[[CallFlow, CallInfo], CallFlow]  # (inner flow, call) -> the wrapped flow


class Pipeline:
    """``pipeline(call)``: ``app``'s flow for the call inside ``layers`` (outermost first),
    or None when the app does not take the call."""

    def __init__(self, app: FlowFactory, layers: Sequence[Layer]) -> None:
        self.app = app
        self.layers = tuple(layers)
        self._inside_out = tuple(reversed(self.layers))

    def __call__(self, call: CallInfo) -> CallFlow | None:
        flow = self.app(call)
        if flow is None:
            return None
        for layer in self._inside_out:
            flow = layer(flow, call)
        return flow


def worker_pipeline(app: FlowFactory, *, cdrs: CdrCalls, queues: QueueRuntime,
                    livekit_sip_uri: str) -> Pipeline:
    """The layers every call of a worker runs in, around ``app``."""
    return Pipeline(app, [
        cdrs.wrap,
        lambda flow, call: BrowserAgentBridge(flow, livekit_sip_uri),
        lambda flow, call: queues.wrap(flow, observer=cdrs),
    ])
