"""The asyncio shell (see :mod:`appserver.shells`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("callyard.shells")

# (method, path) -> (status, content type, body); see appserver.shells.Respond
Respond = Callable[[str, str], Coroutine[Any, Any, tuple[int, str, bytes]]]


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def spawn(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.create_task(work, name=name)


async def cancel(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception():
            log.error("%s failed", task.get_name(), exc_info=task.exception())


def honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop. Call it in a loop that catches
    connection errors and retries, right after catching one: a cancel that lands inside a
    Redis call can come out of redis-py as a connection error while Redis is going away (CI:
    an API context stopped during an outage left its wallboard sampler retrying for ever, and
    the test session's loop hung at exit), and such a loop would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Event(asyncio.Event):
    async def wait(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        try:
            await asyncio.wait_for(super().wait(), timeout)
        except TimeoutError:
            return False
        return True


def event() -> _Event:
    return _Event()


def queue() -> asyncio.Queue[Any]:
    return asyncio.Queue()


class _Server:
    def __init__(self, runner: Any, port: int) -> None:
        self.runner = runner
        self.port = port

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve_http(host: str, port: int, respond: Respond) -> _Server:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        status, content_type, body = await respond(request.method, request.path)
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return _Server(runner, runner.addresses[0][1])


def redis(url: str) -> Any:
    from appserver.redisconn import connect

    # Bursts of calls share a bounded pool and wait for a free connection rather than fail
    # ("Too many connections" with redis-py's default pool of 100).
    return connect(url, "asyncio", bounded=True)

