"""The admin pages (``/admin``): a static shell; it logs in and calls the REST API, which
checks the role of every request (admins edit, supervisors read)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "web" / "templates")


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "admin.html", {})
