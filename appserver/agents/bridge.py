"""Bring a caller into their call's LiveKit room: a call-flow wrapper for the workers.

When the queue runtime assigns a caller to a *browser* agent (``AgentAssigned`` with
``kind="browser"``), the flow then issues ``Dial(target=<agent>, kind="agent")``. This
wrapper turns that dial into ``Dial(<SIP address of the call's room>, kind="sip")``
(:func:`appserver.agents.sip.sip_address`), which each driver dials with its SIP template
(``CALLYARD_FREESWITCH_SIP_TEMPLATE``, ``CALLYARD_ASTERISK_SIP_TEMPLATE``). SIP agents
(phones) are dialled unchanged, with the ordinary dial template. It is a layer of every
call's flow, outside the queueing layer (see :mod:`appserver.worker.pipeline`); until a
browser agent is assigned it passes commands through untouched. A callback's customer is
brought into the room of the callback (the agent accepted it before it was dialled).
Engine-neutral; keeps the CallFlow contract of :mod:`ivr.calls`.

It also turns a supervisor's request (``SuperviseRequest`` from the queue runtime) into
``Supervise`` with the SIP address of the supervisor's own room
(:func:`appserver.agents.sip.supervisor_room`), or ``EndSupervise``: whatever the agent's kind,
the supervisor is in the browser.
"""

from __future__ import annotations

from dataclasses import replace

from appserver.agents.sip import room_address, sip_address, supervisor_room
from appserver.queues.caller_flow import CALLBACK_VARIABLE
from ivr.calls import (
    AgentAssigned,
    CallFlow,
    CallInfo,
    Command,
    Dial,
    EndSupervise,
    Event,
    Supervise,
    SuperviseRequest,
)


class BrowserAgentBridge:
    def __init__(self, inner: CallFlow, sip_uri: str) -> None:
        self.inner = inner
        self.sip_uri = sip_uri
        self.call_id = ""
        self._browser_agents: set[str] = set()

    @property
    def done(self) -> bool:
        return self.inner.done

    def start(self, call: CallInfo) -> list[Command]:
        # A callback's customer joins the room of the callback (the call id of the caller
        # who asked for it), the one its agent entered on accepting.
        callback = call.variables.get(CALLBACK_VARIABLE, "").partition(":")[2]
        self.call_id = callback or call.call_id
        return self.inner.start(call)  # no agent can be assigned yet

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, SuperviseRequest):
            return self._supervise(event)
        if isinstance(event, AgentAssigned) and event.kind == "browser":
            self._browser_agents.add(event.target)
        commands = self.inner.handle(event)
        return self._map(commands) if self._browser_agents else commands

    def _map(self, commands: list[Command]) -> list[Command]:
        return [
            replace(cmd, target=sip_address(self.call_id, self.sip_uri), kind="sip")
            if isinstance(cmd, Dial) and cmd.kind == "agent" and cmd.target in self._browser_agents
            else cmd
            for cmd in commands
        ]

    def _supervise(self, event: SuperviseRequest) -> list[Command]:
        if self.inner.done:
            return []
        if event.mode == "stop":
            return [EndSupervise()]
        target = room_address(supervisor_room(self.call_id), self.sip_uri)
        return [Supervise(target, event.mode, event.join)]
