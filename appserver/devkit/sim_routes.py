"""Simulated calls over HTTP and the softphone page (``callyard dev`` and ``callyard sim``;
the API never mounts them itself: :func:`add_sim_routes` adds them to an app).

A developer (or the softphone page, or a test) places a call into the engine simulator,
presses keys, hangs up, and reads the transcript: what the caller heard, in order, and
where the call went.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall
from appserver.sounds import generated

WEB = Path(__file__).parent / "web"
templates = Jinja2Templates(directory=WEB / "templates")

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

    def incoming(self) -> list[str]:
        """Calls the simulators placed to a phone (a callback's customer) that answered and
        are still up, added to the calls kept here: their ids (the softphone picks them up)."""
        found = []
        for engine, sim in self.simulators.items():
            for number, call in sim.originated:
                if call is None or call.ended or call.call_id in self.calls:
                    continue
                req = PlaceCall.model_construct(to=number, from_="callyard",
                                                engine=engine)
                self.calls[call.call_id] = (req, call)
                found.append(call.call_id)
        return found

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

    @router.get("/incoming", response_model=list[CallState])
    async def incoming() -> list[CallState]:
        """Calls the engine placed to a phone and that phone answered (a callback), each
        listed once; then readable, with keys and hang-up, like the calls placed here."""
        return [calls.state(cid) for cid in calls.incoming()]

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


def add_sim_routes(app: FastAPI, calls: SimCalls) -> None:
    """Mount ``/sim`` (simulated calls) and ``/softphone`` (a page that places them, with
    the generated sounds' texts as captions) on ``app``."""
    app.include_router(sim_router(calls))
    app.state.sim_calls = calls  # the admin editor's "Try it" uses the softphone then
    app.mount("/softphone/static", StaticFiles(directory=WEB / "static"), name="softphone-static")

    @app.get("/softphone", response_class=HTMLResponse, include_in_schema=False)
    async def softphone(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "softphone.html", {"captions": generated()})
