"""A tiny HTTP server for the long-running commands that have no API of their own.

``GET /healthz`` -- 200 while the process runs (``{"status": "ok"}``, or ``"stopping"``
during a graceful shutdown, still 200: the process is alive).
``GET /readyz``  -- 200 when every check returns ``"ok"`` (or ``"warning: ..."``: worth
knowing, not a reason to stop sending work), else 503 with the failing ones; 503 as soon as
a shutdown started (load balancers stop sending work).
``GET /metrics`` -- Prometheus exposition of this process.

:class:`AsyncHealthServer` runs on aiohttp (asyncio commands); :class:`GeventHealthServer`
on ``gevent.pywsgi`` (the FreeSWITCH worker). Enabled by ``CALLYARD_HEALTH_LISTEN``
(``host:port``) or the command's ``--health-listen``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from appserver.metrics import render
from appserver.settings import parse_hostport

log = logging.getLogger("callyard.health")

AsyncChecks = Callable[[], Awaitable[dict[str, str]]]
SyncChecks = Callable[[], dict[str, str]]


async def storage_checks(pool: Any = None, redis: Any = None) -> dict[str, str]:
    """Readiness of an asyncpg pool and a redis.asyncio client: "ok" or what failed."""
    checks: dict[str, str] = {}
    if pool is not None:
        try:
            async with pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"error: {type(exc).__name__}: {exc}"
    if redis is not None:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}: {exc}"
    return checks


def _ready_body(checks: dict[str, str], stopping: bool) -> tuple[int, bytes]:
    if stopping:
        checks = {**checks, "shutdown": "stopping: not taking new calls"}
    ok = all(v == "ok" or v.startswith("warning:") for v in checks.values())
    return (200 if ok else 503), json.dumps({"ready": ok, "checks": checks}).encode()


class AsyncHealthServer:
    def __init__(self, listen: str, checks: AsyncChecks) -> None:
        self.host, self.port = parse_hostport(listen)
        self.checks = checks
        self.stopping = False
        self._runner: Any = None

    async def start(self) -> None:
        from aiohttp import web

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "stopping" if self.stopping else "ok"})

        async def readyz(_: web.Request) -> web.Response:
            try:
                checks = await self.checks()
            except Exception as exc:  # a broken check means not ready, and says why
                checks = {"checks": f"error: {type(exc).__name__}: {exc}"}
            status, body = _ready_body(checks, self.stopping)
            return web.Response(body=body, status=status, content_type="application/json")

        async def metrics(_: web.Request) -> web.Response:
            body, content_type = render()
            return web.Response(body=body, headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        log.info("health server listening", extra={"listen": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class GeventHealthServer:
    def __init__(self, listen: str, checks: SyncChecks) -> None:
        self.host, self.port = parse_hostport(listen)
        self.checks = checks
        self.stopping = False
        self._server: Any = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        if path == "/healthz":
            body = json.dumps({"status": "stopping" if self.stopping else "ok"}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path == "/readyz":
            try:
                checks = self.checks()
            except Exception as exc:
                checks = {"checks": f"error: {type(exc).__name__}: {exc}"}
            status, body = _ready_body(checks, self.stopping)
            start_response("200 OK" if status == 200 else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [body]
        if path == "/metrics":
            body, content_type = render()
            start_response("200 OK", [("Content-Type", content_type)])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /healthz, /readyz or /metrics\n"]

    def start(self) -> None:
        from gevent.pywsgi import WSGIServer

        self._server = WSGIServer((self.host, self.port), self._app, log=None)
        self._server.start()
        self.port = self._server.server_port
        log.info("health server listening", extra={"listen": f"{self.host}:{self.port}"})

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
