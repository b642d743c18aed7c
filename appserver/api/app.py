"""The FastAPI application served by ``callyard api`` and ``callyard dev``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from appserver import __version__
from appserver.api.access_log import AccessLog
from appserver.api.auth import AuthError
from appserver.api.menu_guard import MenuSetRejected
from appserver.api.sim_routes import SimCalls, sim_router
from appserver.metrics import metrics_endpoint
from appserver.store.db import NotFoundError

if TYPE_CHECKING:
    from appserver.api.context import ApiContext

WEB = Path(__file__).parent / "web"
templates = Jinja2Templates(directory=WEB / "templates")
# livekit-client, installed by `make install` (npm) beside the console's package.json.
LIVEKIT_DIST = WEB / "node_modules" / "livekit-client" / "dist"

Readiness = Callable[[], Awaitable[dict[str, str]]]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(MenuSetRejected)
    async def menu_rejected(request: Request, exc: MenuSetRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def missing_reference(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(asyncpg.ForeignKeyViolationError)
    async def in_use(request: Request, exc: asyncpg.ForeignKeyViolationError) -> JSONResponse:
        detail = exc.detail or str(exc)
        return JSONResponse({"detail": f"still in use or refers to a missing row: {detail}"},
                            status_code=409)

    @app.exception_handler(asyncpg.UniqueViolationError)
    async def duplicate(request: Request, exc: asyncpg.UniqueViolationError) -> JSONResponse:
        return JSONResponse({"detail": f"already exists: {exc.detail or exc}"}, status_code=409)

    # CHECK constraints, bad values and trigger errors: the database refused the data.
    for error in (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError,
                  asyncpg.RaiseError):
        @app.exception_handler(error)
        async def refused(request: Request, exc: Exception) -> JSONResponse:
            constraint = getattr(exc, "constraint_name", None)
            where = f" ({constraint})" if constraint else ""
            return JSONResponse({"detail": f"rejected by the database{where}: {exc}"},
                                status_code=422)


def create_app(
    *,
    sim_calls: SimCalls | None = None,
    readiness: Readiness | None = None,
    context: ApiContext | None = None,
) -> FastAPI:
    """Build the app. ``readiness`` checks dependencies for ``/readyz``; ``context`` (the
    database, Redis, LiveKit) enables the REST API, console and WebSocket; ``sim_calls``
    (dev mode only) mounts ``/sim`` and ``/softphone``."""
    app = FastAPI(title="Callyard", version=__version__)
    app.add_middleware(AccessLog, proxies=context.settings.trusted_proxies if context else ())
    if LIVEKIT_DIST.is_dir():  # before /static, which would shadow it
        app.mount("/static/livekit", StaticFiles(directory=LIVEKIT_DIST), name="livekit")
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)  # Prometheus

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready to serve: every dependency answers (503 and the failing ones otherwise)."""
        checks = await readiness() if readiness else {}
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    if context is not None:
        from appserver.api import admin_routes, audit, auth_routes, console_routes, ops_routes

        app.state.ctx = context
        _install_error_handlers(app)
        for module in (auth_routes, admin_routes, audit, ops_routes, console_routes):
            app.include_router(module.router)

    if sim_calls is not None:
        app.include_router(sim_router(sim_calls))

        @app.get("/softphone", response_class=HTMLResponse, include_in_schema=False)
        async def softphone(request: Request) -> HTMLResponse:
            from appserver.sounds import generated

            return templates.TemplateResponse(
                request, "softphone.html", {"captions": generated()}
            )

    return app
