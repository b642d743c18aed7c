"""Simulated calls over HTTP (``callyard dev`` only, never mounted in production).

A developer (or the softphone page, or a test) places a call into the engine simulator,
presses keys, hangs up, and reads the transcript: what the caller heard, in order, and
where the call went.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall

EngineChoice = Literal["freeswitch", "asterisk"]
MAX_CALLS_KEPT = 500  # finished calls are forgotten oldest first beyond this


class PlaceCall(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    to: str = Field(pattern=r"^[0-9*#+]{1,32}$", examples=["9999"])
    from_: str = Field(
        "+15550100", alias="from", pattern=r"^\+?[0-9]{1,20}$", examples=["+15550100"]
    )
    engine: EngineChoice = "freeswitch"


class Digits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digits: str = Field(pattern=r"^[0-9*#A-D]{1,32}$", examples=["1"])


class TranscriptEntry(BaseModel):
    at: float = Field(description="seconds since the call was placed")
    kind: str
    detail: str


class CallState(BaseModel):
    id: str
    engine: EngineChoice
    to: str
    from_: str = Field(alias="from")
    state: Literal["in_progress", "ended"]
    prompts: list[str] = Field(description="prompts heard, in order, as kind:value")
    transcript: list[TranscriptEntry]


class SimCalls:
    """The calls placed over HTTP, kept in memory for the dev server's lifetime."""

    def __init__(self, simulators: dict[str, EngineSimulator]) -> None:
        self.simulators = simulators
        self.calls: OrderedDict[str, tuple[PlaceCall, SimulatedCall]] = OrderedDict()

    async def place(self, req: PlaceCall) -> SimulatedCall:
        sim = self.simulators.get(req.engine)
        if sim is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the {req.engine} simulator is not running"
            )
        call = await sim.place_call(req.to, caller=req.from_)
        self.calls[call.call_id] = (req, call)
        while len(self.calls) > MAX_CALLS_KEPT:
            oldest = next(iter(self.calls))
            if not self.calls[oldest][1].ended:
                break
            self.calls.pop(oldest)
        return call

    def get(self, call_id: str) -> tuple[PlaceCall, SimulatedCall]:
        try:
            return self.calls[call_id]
        except KeyError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no simulated call {call_id}") from None

    def state(self, call_id: str) -> CallState:
        req, call = self.get(call_id)
        return CallState.model_validate(
            {
                "id": call.call_id,
                "engine": req.engine,
                "to": req.to,
                "from": req.from_,
                "state": "ended" if call.ended else "in_progress",
                "prompts": call.prompts(),
                "transcript": [
                    {"at": e.at, "kind": e.kind, "detail": e.detail}
                    for e in call.transcript.entries
                ],
            }
        )


def sim_router(calls: SimCalls) -> APIRouter:
    router = APIRouter(prefix="/sim", tags=["simulated calls (dev only)"])

    @router.post("/calls", status_code=status.HTTP_201_CREATED, response_model=CallState)
    async def place_call(req: PlaceCall) -> CallState:
        """Dial a number on the chosen engine's simulator, as a caller would."""
        call = await calls.place(req)
        return calls.state(call.call_id)

    @router.get("/calls", response_model=list[CallState])
    async def list_calls() -> list[CallState]:
        return [calls.state(cid) for cid in reversed(calls.calls)]

    @router.get("/calls/{call_id}", response_model=CallState)
    async def get_call(call_id: str) -> CallState:
        return calls.state(call_id)

    @router.post("/calls/{call_id}/dtmf", response_model=CallState)
    async def press(call_id: str, body: Digits) -> CallState:
        """Press keys on the caller's phone (one DTMF event per digit)."""
        _, call = calls.get(call_id)
        if call.ended:
            raise HTTPException(status.HTTP_409_CONFLICT, "the call has ended")
        await call.press(body.digits)
        return calls.state(call_id)

    @router.post("/calls/{call_id}/hangup", response_model=CallState)
    async def hangup(call_id: str) -> CallState:
        _, call = calls.get(call_id)
        if not call.ended:
            await call.hangup()
        return calls.state(call_id)

    return router
