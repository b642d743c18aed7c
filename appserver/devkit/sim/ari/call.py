"""The simulated caller on the ARI simulator."""

from __future__ import annotations

from typing import Protocol

from appserver.devkit.sim.caller import SimulatedCall, Transcript


class CallerSide(Protocol):
    """What a caller does through the simulated Asterisk (:class:`.server.AriSimulator`,
    which creates the calls, so this module does not import it)."""

    async def caller_dtmf(self, channel_id: str, digits: str, gap: float) -> None: ...
    async def caller_hangup(self, channel_id: str) -> None: ...


class AriSimulatedCall(SimulatedCall):
    """A caller whose call reached the simulated Asterisk; ``call_id`` is the channel id."""

    def __init__(self, sim: CallerSide, call_id: str, to: str, caller: str) -> None:
        self.sim = sim
        self.call_id = call_id
        self.to = to
        self.caller = caller
        self.transcript = Transcript()

    async def press(self, digits: str, gap: float = 0.05) -> None:
        await self.sim.caller_dtmf(self.call_id, digits, gap)

    async def hangup(self) -> None:
        await self.sim.caller_hangup(self.call_id)

    def __repr__(self) -> str:
        return f"AriSimulatedCall({self.call_id!r}, to={self.to!r})"
