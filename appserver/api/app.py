"""The FastAPI application served by ``callyard api`` and ``callyard dev``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from appserver import __version__
from appserver.api.sim_routes import SimCalls, sim_router

WEB = Path(__file__).parent / "web"
templates = Jinja2Templates(directory=WEB / "templates")


Readiness = Callable[[], Awaitable[dict[str, str]]]


def create_app(
    *, sim_calls: SimCalls | None = None, readiness: Readiness | None = None
) -> FastAPI:
    """Build the app. ``readiness`` checks dependencies for ``/readyz``; ``sim_calls``
    (dev mode only) mounts ``/sim`` and ``/softphone``."""
    app = FastAPI(title="Callyard", version=__version__)
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready to serve: every dependency answers (503 and the failing ones otherwise)."""
        checks = await readiness() if readiness else {}
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    if sim_calls is not None:
        app.include_router(sim_router(sim_calls))

        @app.get("/softphone", response_class=HTMLResponse, include_in_schema=False)
        async def softphone(request: Request) -> HTMLResponse:
            from appserver.demo import PROMPT_TEXT

            return templates.TemplateResponse(
                request, "softphone.html", {"captions": PROMPT_TEXT}
            )

    return app
