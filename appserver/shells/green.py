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
import gevent.monkey
import gevent.queue
import gevent.select

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

class _ReadinessPoll:
    """``select.poll()`` for redis-py's readiness checks under gevent: a poll that must not
    wait (timeout 0) is the operating system's, answered at once; any other is gevent's, which
    lets the other greenlets run while it waits."""

    __slots__ = ("_fds",)

    def __init__(self) -> None:
        self._fds: list[tuple[Any, int]] = []

    def register(self, fd: Any, eventmask: int) -> None:
        self._fds.append((fd, eventmask))

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        os_poll = gevent.monkey.get_original("select", "poll")
        poller = os_poll() if timeout == 0 else gevent.select.poll()
        for fd, eventmask in self._fds:
            poller.register(fd, eventmask)
        return list(poller.poll(timeout))


class _SelectForRedis:
    """The ``select`` module as redis-py's hiredis parser sees it: ``poll`` above, the rest
    the (patched) module's."""

    poll = _ReadinessPoll

    def __getattr__(self, name: str) -> Any:
        import select

        return getattr(select, name)


def quick_redis_checks() -> bool:
    """Before it hands out a pooled connection, redis-py asks whether the connection holds
    unread data: ``select.poll()`` with timeout 0. Patched by gevent, that poll makes
    watchers and switches to the hub: a fifth of the FreeSWITCH worker's time in Redis
    (py-spy). Give redis-py's parser :class:`_ReadinessPoll` instead. False (nothing
    changed) when this redis-py does not check that way."""
    from redis._parsers import hiredis

    if not callable(getattr(hiredis, "_socket_can_read", None)) \
            or getattr(hiredis, "select", None) is None:
        return False
    hiredis.select = _SelectForRedis()  # type: ignore[assignment]
    return True


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


def honour_cancel() -> None:
    """Nothing to do: a kill is GreenletExit, which the blocking redis-py lets through."""


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

