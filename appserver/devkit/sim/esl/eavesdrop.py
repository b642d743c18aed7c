"""A supervisor's leg running mod_eavesdrop on a simulated caller.

``originate {vars}<dial> &eavesdrop(<uuid>)`` rings the dialled party, then eavesdrops on
the call ``uuid``: the supervisor hears the caller and the bridged party; what they say is
mixed into the caller's read stream (ED_MUX_READ: the bridged party hears it) and/or write
stream (ED_MUX_WRITE: the caller hears it), as switch_ivr_async.c does. The flags start from
``eavesdrop_whisper_aleg`` / ``eavesdrop_whisper_bleg`` and change with digits received on
the leg (``uuid_recv_dtmf``): 1 read only, 2 write only, 3 both, 0 none, * ends it; only
with ``eavesdrop_enable_dtmf`` not false. Each change is transcribed on the caller's call as
``supervised "<room> heard_by=..."``.
"""

from __future__ import annotations

import asyncio

from appserver.devkit.sim.caller import first_of
from appserver.devkit.sim.esl.call import DialledLeg, EslSimCall

_DIGIT_FLAGS = {"0": (False, False), "1": (True, False), "2": (False, True), "3": (True, True)}


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "yes", "on", "1", "enabled", "active", "allow")


class EavesdropLeg(DialledLeg):
    def __init__(self, call: EslSimCall, uuid: str, target: str, leg_vars: dict[str, str]) -> None:
        super().__init__(call, uuid, target)
        self.channel.variables.update(leg_vars)
        self.mux_read = _true(leg_vars.get("eavesdrop_whisper_aleg"))
        self.mux_write = _true(leg_vars.get("eavesdrop_whisper_bleg"))
        dtmf = leg_vars.get("eavesdrop_enable_dtmf")
        self.dtmf = dtmf is None or _true(dtmf)

    def heard_by(self) -> str:
        """Who hears the supervisor: the caller (write), the bridged party (read)."""
        who = (["caller"] if self.mux_write else []) + (["agent"] if self.mux_read else [])
        return ",".join(who) or "nobody"

    def _transcribe(self) -> None:
        self.call.transcript.add("supervised", f"{self.target} heard_by={self.heard_by()}")

    async def run(self) -> None:
        """Ring, answer, eavesdrop until the leg or the caller ends."""
        b = self.call.sim.behaviour
        mode = b.endpoints.get(self.target, b.default_endpoint)
        await first_of([self.ended, self.call._hungup], b.ring_seconds)
        if mode != "answer" or not self.alive or not self.call.channel.alive:
            self.hangup("NO_ANSWER" if mode == "no_answer" else "CALL_REJECTED")
            return
        self.answer()
        self._transcribe()
        await first_of([self.ended, self.call._hungup], None)
        self.hangup("NORMAL_CLEARING")
        self.call.transcript.add("supervised", f"{self.target} gone")

    def receive_dtmf(self, digits: str) -> None:
        if not self.dtmf or not self.bridged:
            return
        for digit in digits:
            if digit == "*":
                self.hangup("NORMAL_CLEARING")
                return
            if digit in _DIGIT_FLAGS:
                self.mux_read, self.mux_write = _DIGIT_FLAGS[digit]
                self._transcribe()


def start(call: EslSimCall, uuid: str, target: str, leg_vars: dict[str, str]) -> EavesdropLeg:
    leg = EavesdropLeg(call, uuid, target, leg_vars)
    call.sim.legs[uuid] = leg
    call.transcript.add("dialed", target)
    asyncio.get_running_loop().create_task(leg.run())
    return leg
