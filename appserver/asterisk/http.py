"""HTTP/1.1 keep-alive connections for ARI's REST requests, parsed by httptools (llhttp).

ARI answers each request with a short response carrying ``Content-Length`` (or, from a
proxy, chunked). The pool writes each request in one ``transport.write``, lets the C parser
read the answer, and keeps connections alive for the next request. It is deliberately
narrow: no redirects, no cookies, no compression, no request bodies (ARI takes every
parameter in the query string).

Failures: a response arrives (any status) -> :class:`Response`; the connection drops, the
answer cannot be parsed or the server does not answer in ``timeout`` seconds (checked by one
timer per pool every tenth of ``timeout``: a request times out between 1x and 1.1x of it) ->
``ConnectionResetError`` / ``TimeoutError`` (both ``OSError``); a request on a closed pool ->
``ConnectionError``. A request sent on a reused connection that the server had closed
meanwhile (keep-alive timeout) is retried once on a fresh connection when not a byte of the
answer came back.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_FRAMING = (b"content-length", b"transfer-encoding")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight. The parser's callbacks
    (``on_*``) build the response of the request in flight."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.got_bytes = False  # any byte of the current response arrived
        self.reusable = True
        self.sent_at = 0.0  # loop time the request in flight was written
        self._reason = b""
        self._body: list[bytes] = []
        self._framed = False  # the response said how long its body is

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        self._fail(ConnectionResetError(str(exc) if exc else "ARI closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # unsolicited bytes: the connection is out of step
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ or exc  # what a callback raised, else the parser's error
            self._fail(ConnectionResetError(f"bad HTTP response from ARI: {cause}"))
            self.close()

    # ---------------------------------------------------------------- parser callbacks

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if not self._framed and status >= 200 and status not in (204, 304):
            # Its body would end only when the server closes: never kept in step.
            raise ValueError("response without Content-Length")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = Response(self.parser.get_status_code(), self._reason.decode("latin-1"),
                            b"".join(self._body))
        self.reusable = self.parser.should_keep_alive()
        self._reason, self._body, self._framed = b"", [], False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # ---------------------------------------------------------------- use

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


class HttpPool:
    """Keep-alive connections to one ``http(s)://host:port``; requests carry ``headers``.

    At most ``limit`` requests are in flight (more wait their turn, first come first
    served), so at most ``limit`` connections exist (Asterisk serves each HTTP connection
    with a thread), all kept alive. A counter, not an ``asyncio.Semaphore``: the common case
    (a slot free) costs an increment. Timeouts: one timer per pool, running while requests
    are in flight, not one per request.
    """

    def __init__(self, base_url: str, headers: dict[str, str], *, timeout: float = 30.0,
                 limit: int = 100) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None)
        self.path_prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rpartition("@")[2]
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head_tail = (f" HTTP/1.1\r\nHost: {host_header}\r\n{extra}"
                           "Content-Length: 0\r\n\r\n").encode("latin-1")
        self.timeout = timeout
        self.limit = limit
        self._active = 0  # requests holding a slot
        self._waiting: deque[asyncio.Future[None]] = deque()  # requests waiting for a slot
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._busy: set[_Connection] = set()  # with a request in flight (see _check_timeouts)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, path_and_query: str) -> Response:
        """``path_and_query`` is appended to the base URL's path, already percent-encoded."""
        data = (f"{method} {self.path_prefix}{path_and_query}".encode("latin-1")
                + self._head_tail)
        if self._active < self.limit and not self._waiting:
            self._active += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter  # resolved: a finished request handed its slot over
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed over as this request was cancelled: pass it on
                raise
        try:
            return await self._request(data)
        finally:
            self._release()

    def _release(self) -> None:
        """A request's slot goes to the first request waiting (if any), else is freed."""
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():  # a cancelled one is skipped
                waiter.set_result(None)
                return
        self._active -= 1

    async def _request(self, data: bytes) -> Response:
        conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                return await self._exchange(conn, data)
            except ConnectionResetError:
                if conn.got_bytes:
                    raise
                # The server closed the idle connection as we sent: nothing was processed.
        return await self._exchange(await self._connect(), data)

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectionError("ARI HTTP pool is closed")
        loop = asyncio.get_running_loop()
        conn = _Connection(self)
        await asyncio.wait_for(
            loop.create_connection(lambda: conn, self.host, self.port, ssl=self.ssl),
            self.timeout)
        self._all.add(conn)
        return conn

    async def _exchange(self, conn: _Connection, data: bytes) -> Response:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        conn.waiter, conn.got_bytes, conn.sent_at = waiter, False, loop.time()
        assert conn.transport is not None
        conn.transport.write(data)
        self._busy.add(conn)
        if self._timer is None:
            self._timer = loop.call_later(self.timeout / 10, self._check_timeouts)
        try:
            response = await waiter
        except BaseException:
            conn.close()  # the answer may still come: this connection is out of step
            raise
        finally:
            self._busy.discard(conn)
            conn.waiter = None
        if conn.reusable and not conn.closed and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def _check_timeouts(self) -> None:
        """Every tenth of ``timeout`` while requests are in flight: fail those sent at least
        ``timeout`` ago."""
        self._timer = None
        if not self._busy:
            return
        loop = asyncio.get_running_loop()
        expired = loop.time() - self.timeout
        for conn in self._busy:
            if conn.sent_at <= expired and conn.waiter is not None:
                _expire(conn.waiter)  # its request's finally takes it out of _busy
        self._timer = loop.call_later(self.timeout / 10, self._check_timeouts)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("ARI did not answer in time"))
