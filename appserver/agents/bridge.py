"""Bring a caller into their call's LiveKit room: a call-flow wrapper for the workers.

When the queue runtime assigns a caller to a *browser* agent (``AgentAssigned`` with
``kind="browser"``), the flow then issues ``Dial(target=<agent>, kind="agent")``. This
wrapper rewrites that dial's target to the LiveKit SIP address of the call's room
(:func:`appserver.agents.sip.sip_address`), so the engine's dial template only has to
name the route to LiveKit SIP, e.g.::

    CALLYARD_ASTERISK_DIAL_TEMPLATE="PJSIP/livekit/{target}"   # a PJSIP endpoint "livekit"
    CALLYARD_FREESWITCH_DIAL_TEMPLATE="sofia/external/{target}"

SIP agents (phones) are dialled unchanged. Wire it in the worker's flow factory, outside
the queue runtime's wrapper: ``BrowserAgentBridge(runtime.wrap(flow), settings.livekit_sip_uri)``.
The wrapper is engine-neutral and keeps the CallFlow contract of :mod:`ivr.calls`.
"""

from __future__ import annotations

from dataclasses import replace

from appserver.agents.sip import sip_address
from ivr.calls import AgentAssigned, CallFlow, CallInfo, Command, Dial, Event


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
        self.call_id = call.call_id
        return self._map(self.inner.start(call))

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, AgentAssigned) and event.kind == "browser":
            self._browser_agents.add(event.target)
        return self._map(self.inner.handle(event))

    def _map(self, commands: list[Command]) -> list[Command]:
        return [
            replace(cmd, target=sip_address(self.call_id, self.sip_uri))
            if isinstance(cmd, Dial) and cmd.kind == "agent" and cmd.target in self._browser_agents
            else cmd
            for cmd in commands
        ]
