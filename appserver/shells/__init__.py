"""The two runtime shells: the same async code runs on asyncio and under gevent.

The queue runtime, the CDR sink, the menu-set reader and the health server are written once,
as async code that awaits two things only: its shell's operations (sleep, spawn, events,
queues, an HTTP server) and its Redis client's replies (:func:`reply`). A shell is a module:

* :mod:`appserver.shells.aio` -- asyncio (``callyard asterisk``, ``callyard api``, the CDR
  writer), with ``redis.asyncio``;
* :mod:`appserver.shells.green` -- gevent (``callyard freeswitch``), with the blocking
  ``redis.Redis`` on patched sockets. :func:`appserver.shells.green.run` drives a coroutine
  to its end in the calling greenlet: every await in it completes at once, because gevent
  blocks cooperatively underneath.

The Redis operations themselves are sans-IO (the queue store's scripts, arguments and result
parsers; the menu keys; the CDR stream entries): only the client's reply differs, a value
from ``redis.Redis``, an awaitable from ``redis.asyncio``. A class that is given a client
takes the shell that goes with it (:func:`for_client`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
# An HTTP handler: (method, path) -> (status, content type, body).
Respond = Callable[[str, str], Coroutine[Any, Any, tuple[int, str, bytes]]]


class Event(Protocol):
    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self, timeout: float | None = None) -> bool:
        """Until set (True) or ``timeout`` seconds passed (False)."""
        ...


class Queue(Protocol[T]):
    def put_nowait(self, item: T) -> None: ...

    async def get(self) -> T: ...

    def empty(self) -> bool: ...

    def get_nowait(self) -> T:
        """The next item; only when not :meth:`empty`."""
        ...

    def task_done(self) -> None: ...

    async def join(self) -> None:
        """Until every item put has been got and marked done."""
        ...


class HttpServer(Protocol):
    port: int  # the port it listens on (the one the system chose for 0)

    async def close(self) -> None: ...


class Shell(Protocol):
    """What :mod:`~appserver.shells.aio` and :mod:`~appserver.shells.green` provide."""

    async def sleep(self, seconds: float) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> Any:
        """Run ``work`` beside the caller (a task, a greenlet); the handle for cancel()."""
        ...

    async def cancel(self, tasks: list[Any], timeout: float) -> None:
        """Stop ``tasks`` and wait up to ``timeout`` seconds for them to end."""
        ...

    def honour_cancel(self) -> None:
        """In a loop that catches connection errors and retries, right after catching one:
        stop if this task was cancelled (a cancel can come out of redis-py as such an error)."""
        ...

    def event(self) -> Event: ...

    def queue(self) -> Queue[Any]: ...

    async def serve_http(self, host: str, port: int, respond: Respond) -> HttpServer: ...

    def redis(self, url: str) -> Any:
        """A worker's Redis client (str replies, a bounded pool)."""
        ...


async def reply(answer: Awaitable[T] | T) -> T:
    """What a Redis client answered: awaited from ``redis.asyncio``, as is from ``redis.Redis``."""
    if inspect.isawaitable(answer):
        return await answer
    return answer


async def close(resource: Any) -> None:
    """Close a Redis client or pub/sub: ``aclose()`` on ``redis.asyncio``, else ``close()``."""
    closer = getattr(resource, "aclose", None) or resource.close
    await reply(closer())


def for_client(client: Any) -> Shell:
    """The shell that goes with ``client``: asyncio for ``redis.asyncio``, else gevent."""
    import redis.asyncio

    if isinstance(client, redis.asyncio.Redis):
        from appserver.shells import aio

        return aio
    from appserver.shells import green

    return green
