"""The FastAPI application served by ``callyard api`` and ``callyard dev``."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from appserver import __version__
from appserver.api.access_log import AccessLog
from appserver.api.auth import AuthError
from appserver.api.menu_guard import MenuSetRejected
from appserver.metrics import metrics_endpoint
from appserver.settings import get_settings
from appserver.store.db import DB_UNAVAILABLE, NotFoundError

if TYPE_CHECKING:
    from appserver.api.context import ApiContext

log = logging.getLogger("callyard.api")
WEB = Path(__file__).parent / "web"
# livekit-client, installed by `make install` (npm) beside the console's package.json.
LIVEKIT_DIST = WEB / "node_modules" / "livekit-client" / "dist"
UPLOT_DIST = WEB / "node_modules" / "uplot" / "dist"  # the wallboard's charts

Readiness = Callable[[], Awaitable[dict[str, str]]]
ECHO_LIMIT = 100  # longest input text a 422 repeats back (characters)
MAX_REPORTED_ERRORS = 20


def _echo(value: object) -> object:
    """What a 422 may repeat of one input value: a short scalar, else a placeholder (the
    client knows what it sent; a huge or non-JSON value such as NaN must not come back)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else "(not a finite number)"
    if isinstance(value, str):
        return value if len(value) <= ECHO_LIMIT else value[:ECHO_LIMIT] + "..."
    return f"({type(value).__name__})"


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's errors, with every echoed value bounded and JSON-safe."""
    errors = exc.errors()
    out = []
    for error in errors[:MAX_REPORTED_ERRORS]:
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": [_echo(part) for part in error["loc"]],
            "msg": error["msg"],
        }
        if "input" in error:
            item["input"] = _echo(error["input"])
        if error.get("ctx"):
            item["ctx"] = {k: _echo(v if isinstance(v, int | float | str) else str(v))
                           for k, v in error["ctx"].items()}
        out.append(item)
    if len(errors) > MAX_REPORTED_ERRORS:
        out.append({"type": "too_many_errors", "loc": ["body"],
                    "msg": f"{len(errors) - MAX_REPORTED_ERRORS} more errors not shown"})
    return out


def _install_validation_handler(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(MenuSetRejected)
    async def menu_rejected(request: Request, exc: MenuSetRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status)

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

    # No writable primary (a failover or restart in progress): the client may retry; the
    # pool reconnects, through the URL's host list, on the next request.
    for error in DB_UNAVAILABLE:
        @app.exception_handler(error)
        async def unavailable(request: Request, exc: Exception) -> JSONResponse:
            log.warning("database unavailable: %s %s answered 503", request.method,
                        request.url.path, extra={"error": f"{type(exc).__name__}: {exc}"})
            message = "the database cannot be reached right now (failover or restart?); try again"
            return JSONResponse({"detail": {"code": "database_unavailable", "message": message}},
                                status_code=503, headers={"Retry-After": "2"})

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
    readiness: Readiness | None = None,
    context: ApiContext | None = None,
    metrics_peers: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the app. ``readiness`` checks dependencies for ``/readyz``; ``context`` (the
    database, Redis, LiveKit) enables the REST API, console and WebSocket; ``metrics_peers``
    (dev mode only, ``{process: URL}``) adds those processes' metrics to ``/metrics``.
    Request bodies are limited to the settings' ``api_max_body`` bytes (413 above)."""
    settings = context.settings if context is not None else get_settings()
    app = FastAPI(title="Callyard", version=__version__, max_body_size=settings.api_max_body)
    _install_validation_handler(app)
    app.add_middleware(AccessLog, proxies=settings.trusted_proxies if context else ())
    if LIVEKIT_DIST.is_dir():  # before /static, which would shadow it
        app.mount("/static/livekit", StaticFiles(directory=LIVEKIT_DIST), name="livekit")
    if UPLOT_DIST.is_dir():
        app.mount("/static/uplot", StaticFiles(directory=UPLOT_DIST), name="uplot")
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    app.add_route("/metrics", metrics_endpoint(metrics_peers), include_in_schema=False)

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready to serve: every dependency answers (503 and the failing ones otherwise)."""
        checks = await readiness() if readiness else {}
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    if context is not None:
        from appserver.api import (
            admin_page,
            admin_routes,
            audit,
            auth_routes,
            console_routes,
            menu_draft_routes,
            ops_routes,
            recording_routes,
            supervise_routes,
            supervisor_routes,
            voicemail_routes,
        )

        app.state.ctx = context
        _install_error_handlers(app)
        for module in (auth_routes, admin_routes, audit, ops_routes, console_routes,
                       supervise_routes, supervisor_routes, menu_draft_routes, admin_page,
                       voicemail_routes, recording_routes):
            app.include_router(module.router)

    return app
