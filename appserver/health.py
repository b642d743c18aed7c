"""A tiny HTTP server for the long-running commands that have no API of their own.

``GET /healthz`` -- 200 while the process runs (``{"status": "ok"}``, or ``"stopping"``
during a graceful shutdown, still 200: the process is alive).
``GET /readyz``  -- 200 when every check returns ``"ok"`` (or ``"warning: ..."``: worth
knowing, not a reason to stop sending work), else 503 with the failing ones; 503 as soon as
a shutdown started (load balancers stop sending work).
``GET /metrics`` -- Prometheus exposition of this process.

:meth:`HealthServer.respond` maps a request (method, path) to its response (status, content
type, body) and does no I/O; the shell it is given (:mod:`appserver.shells`) serves it:
aiohttp for the asyncio commands, ``gevent.pywsgi`` for the FreeSWITCH worker. Enabled by
``CALLYARD_HEALTH_LISTEN`` (``host:port``) or the command's ``--health-listen``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from appserver.metrics import render
from appserver.settings import parse_hostport
from appserver.shells import HttpServer, Shell, aio, reply

log = logging.getLogger("callyard.health")

Checks = Callable[[], Awaitable[dict[str, str]]]
JSON = "application/json"


async def storage_checks(pool: Any = None, redis: Any = None) -> dict[str, str]:
    """Readiness of an asyncpg pool and a Redis client: "ok" or what failed."""
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
            await reply(redis.ping())
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}: {exc}"
    return checks


class HealthServer:
    """``await start()`` / ``await stop()``; ``stopping = True`` once a shutdown begins."""

    def __init__(self, listen: str, checks: Checks, shell: Shell = aio) -> None:
        self.host, self.port = parse_hostport(listen)
        self.checks = checks
        self.shell = shell
        self.stopping = False
        self._server: HttpServer | None = None

    async def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/healthz":
            return 200, JSON, json.dumps({"status": "stopping" if self.stopping else "ok"}).encode()
        if path == "/readyz":
            return await self._ready()
        if path == "/metrics":
            body, content_type = render()
            return 200, content_type, body
        return 404, "text/plain", b"not found: try /healthz, /readyz or /metrics\n"

    async def _ready(self) -> tuple[int, str, bytes]:
        try:
            checks = await self.checks()
        except Exception as exc:  # a broken check means not ready, and says why
            checks = {"checks": f"error: {type(exc).__name__}: {exc}"}
        if self.stopping:
            checks = {**checks, "shutdown": "stopping: not taking new calls"}
        ok = all(v == "ok" or v.startswith("warning:") for v in checks.values())
        return (200 if ok else 503), JSON, json.dumps({"ready": ok, "checks": checks}).encode()

    async def start(self) -> None:
        self._server = await self.shell.serve_http(self.host, self.port, self.respond)
        self.port = self._server.port
        log.info("health server listening", extra={"listen": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
