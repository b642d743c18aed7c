"""The gevent shell (see :mod:`appserver.shells`).

Runs the same async code as :mod:`appserver.shells.aio`, without an event loop: :func:`run`
sends a coroutine one step, and that step is the whole of it, because everything it awaits
here (these functions, a blocking ``redis.Redis`` reply) completes before returning: gevent
switches greenlets inside the blocking calls underneath.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.queue

T = TypeVar("T")


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end in this greenlet and return its result."""
    try:
        work.send(None)
    except StopIteration as done:
        return done.value
    work.close()
    raise RuntimeError("a coroutine run under gevent awaited something that suspends "
                       "(an asyncio object?): await only appserver.shells.green and redis.Redis")

# (method, path) -> (status, content type, body); see appserver.shells.Respond
Respond = Callable[[str, str], Coroutine[Any, Any, tuple[int, str, bytes]]]


async def sleep(seconds: float) -> None:
    gevent.sleep(seconds)


def spawn(work: Coroutine[Any, Any, None], name: str) -> gevent.Greenlet:
    greenlet = gevent.Greenlet(run, work)
    greenlet.name = name
    greenlet.start()
    return greenlet


async def cancel(tasks: list[gevent.Greenlet], timeout: float) -> None:
    gevent.killall(tasks, timeout=timeout)


class _Event:
    def __init__(self) -> None:
        self._event = gevent.event.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    async def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))


def event() -> _Event:
    return _Event()


class _Queue:
    def __init__(self) -> None:
        self._queue = gevent.queue.JoinableQueue()

    def put_nowait(self, item: Any) -> None:
        self._queue.put_nowait(item)

    async def get(self) -> Any:
        return self._queue.get()

    def empty(self) -> bool:
        return bool(self._queue.empty())

    def get_nowait(self) -> Any:
        return self._queue.get_nowait()

    def task_done(self) -> None:
        self._queue.task_done()

    async def join(self) -> None:
        self._queue.join()


def queue() -> _Queue:
    return _Queue()


class _Server:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.port: int = server.server_port

    async def close(self) -> None:
        self.server.stop(timeout=1)


async def serve_http(host: str, port: int, respond: Respond) -> _Server:
    from gevent.pywsgi import WSGIServer

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, content_type, body = run(respond(environ["REQUEST_METHOD"],
                                                 environ.get("PATH_INFO", "")))
        start_response(f"{status} {HTTPStatus(status).phrase}", [("Content-Type", content_type)])
        return [body]

    server = WSGIServer((host, port), app, log=None)
    server.start()
    return _Server(server)


def redis(url: str) -> Any:
    from appserver.redisconn import connect

    return connect(url, "sync", bounded=True)

