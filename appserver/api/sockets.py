"""What the agent console's and the wallboard's WebSockets share: who may open one, and the
loop that forwards a process's events to it while its session stays valid.

Browsers cannot read a refused handshake's status, so a refused socket is accepted and then
closed with 4401 (no valid session) or 4403 (not allowed; also a cross-origin page).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import WebSocket, WebSocketDisconnect

from appserver.api.auth import SESSION_COOKIE, AuthError, Principal, authenticate
from appserver.api.context import ApiContext

SESSION_RECHECK = 25.0  # seconds between checks that a socket's session is still valid

Admit = Callable[[Principal], None]  # raises AuthError for a principal not allowed in


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == ws.headers.get("host")


@dataclass
class SocketSession:
    ws: WebSocket
    ctx: ApiContext
    principal: Principal
    bearer: str | None
    cookie: str | None
    admit: Admit

    async def check(self) -> None:
        """The session is still valid and still allowed in (else AuthError)."""
        self.admit(await authenticate(self.ctx.pool, self.ctx.sessions, self.bearer,
                                      self.cookie))


async def open_socket(ws: WebSocket, admit: Admit) -> SocketSession | None:
    """Accept ``ws`` for a logged-in principal ``admit`` lets in; None when refused (the
    socket is then closed with 4000 + the HTTP status)."""
    ctx: ApiContext = ws.app.state.ctx
    auth = ws.headers.get("authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else None
    cookie = ws.cookies.get(SESSION_COOKIE)
    try:
        if not _same_origin(ws):
            raise AuthError(403, "cross-origin WebSocket refused")
        principal = await authenticate(ctx.pool, ctx.sessions, bearer, cookie)
        admit(principal)
    except AuthError as exc:
        await ws.accept()
        await ws.close(code=4000 + exc.status, reason=exc.detail[:120])
        return None
    await ws.accept()
    return SocketSession(ws, ctx, principal, bearer, cookie, admit)


async def forward(session: SocketSession, events: asyncio.Queue[dict[str, Any]],
                  first: dict[str, Any], idle: dict[str, Any] | None = None) -> None:
    """Send ``first``, then every event of ``events`` until the client leaves or its session
    ends (checked every SESSION_RECHECK seconds; then closed with 4401 / 4403). ``idle`` is
    sent after SESSION_RECHECK seconds without an event (a keep-alive), if given."""
    ws = session.ws
    reader = asyncio.create_task(_drain(ws))
    try:
        await ws.send_json(first)
        recheck = time.monotonic() + SESSION_RECHECK
        while not reader.done():
            if time.monotonic() >= recheck:
                await session.check()
                recheck = time.monotonic() + SESSION_RECHECK
            getter = asyncio.create_task(events.get())
            done, _ = await asyncio.wait({getter, reader}, timeout=SESSION_RECHECK,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await ws.send_json(getter.result())
            else:
                getter.cancel()
                if not done and idle is not None:
                    await ws.send_json(idle)
    except AuthError as exc:
        await ws.close(code=4000 + exc.status, reason=exc.detail[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await reader


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends; returns when it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()
