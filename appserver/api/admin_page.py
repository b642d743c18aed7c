"""The admin pages (``/admin``): a shell; it logs in and calls the REST API, which checks
the role of every request (admins edit, supervisors read)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from appserver.sounds import generated

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "web" / "templates")


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin(request: Request) -> HTMLResponse:
    # "Try it" calls through the engine simulator's softphone in `callyard dev` (which mounts
    # /sim); elsewhere it replays the draft in the page (and shows the trial number to dial
    # when trial calls are on).
    sim_calls = getattr(request.app.state, "sim_calls", None)
    softphone = sim_calls is not None
    try_config = {
        "softphone": softphone,
        "engines": list(sim_calls.simulators) if sim_calls is not None else [],
        "trial_calls": request.app.state.ctx.settings.menu_trials,
        "captions": generated() if softphone else {},
    }
    return templates.TemplateResponse(request, "admin.html", {"try_config": try_config})
