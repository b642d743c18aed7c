"""HTTP access log: one line per request on the ``callyard.http`` logger.

Fields: ``method``, ``path`` (never the query string, which may carry secrets), ``status``,
``ms``, ``client`` (see CALLYARD_TRUSTED_PROXIES) and ``user`` (the agent or ``key:<name>``
once authenticated). Health probes, metrics, static files and the dev simulator's polling
are logged at DEBUG, everything else at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appserver.api.deps import client_address
from appserver.settings import Network

log = logging.getLogger("callyard.http")

_QUIET = ("/healthz", "/readyz", "/metrics", "/static/", "/sim")


class AccessLog:
    """Pure ASGI middleware (nothing buffered, WebSockets pass through untouched)."""

    def __init__(self, app: ASGIApp, proxies: Sequence[Network] = ()) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        state = scope.setdefault("state", {})  # request.state: the principal lands here

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope["path"]
            principal = state.get("principal")
            log.log(
                logging.DEBUG if path.startswith(_QUIET) else logging.INFO,
                "%s %s %d", scope["method"], path, status,
                extra={
                    "method": scope["method"], "path": path, "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": client_address(HTTPConnection(scope), self.proxies),
                    "user": principal.name if principal else None,
                },
            )
