"""A small HTTP/1.1 keep-alive client for ARI's per-call requests.

ARI answers each REST request with a short response carrying ``Content-Length`` (or, from a
proxy, chunked). At thousands of requests per second aiohttp's general-purpose client costs
about as much CPU as everything else the worker does per request, so the hot operations go
through this client instead: one ``transport.write`` per request, the response parsed in
place, connections kept alive and reused. It is deliberately narrow: no redirects, no
cookies, no request bodies, no compression.

Failures: a response arrives (any status) -> :class:`Response`; the connection drops or the
server does not answer in ``timeout`` seconds -> ``ConnectionResetError`` / ``TimeoutError``.
A request sent on a reused connection that the server had closed meanwhile (keep-alive
timeout) is retried once on a fresh connection when not a byte of the answer came back.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.got_bytes = False  # any byte of the current response arrived
        self.reusable = True

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError(
                str(exc) if exc else "ARI closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            if waiter is None:  # unsolicited bytes: the connection is out of step
                self.close()
            return
        try:
            response = self._parse()
        except ValueError as exc:
            self.reusable = False
            waiter.set_exception(ConnectionResetError(f"bad HTTP response from ARI: {exc}"))
            self.close()
            return
        if response is not None:
            waiter.set_result(response)

    # ---------------------------------------------------------------- parsing

    def _parse(self) -> Response | None:
        """The complete response at the start of the buffer, or None while incomplete."""
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise ValueError("response head too long")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ValueError(f"bad status line {lines[0][:80]!r}")
        length = -1
        chunked = False
        keep_alive = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                token = value.strip().lower()
                keep_alive = token == "keep-alive" or (keep_alive and token != "close")
        start = end + 4
        status = int(code)
        if chunked:
            parsed = _dechunk(buf, start)
            if parsed is None:
                return None
            body, consumed = parsed
        elif length >= 0:
            if len(buf) - start < length:
                return None
            body, consumed = bytes(buf[start:start + length]), start + length
        elif status in (204, 304) or 100 <= status < 200:
            body, consumed = b"", start
        else:
            raise ValueError("response without Content-Length")  # would end at close
        del buf[:consumed]
        self.reusable = keep_alive and not buf
        return Response(status, reason, body)

    # ---------------------------------------------------------------- use

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # optional trailers, then an empty line
            return (bytes(body), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2


class HttpPool:
    """Keep-alive connections to one ``http(s)://host:port``; requests carry ``headers``.

    At most ``limit`` requests are in flight (more wait their turn), so at most ``limit``
    connections exist (Asterisk serves each HTTP connection with a thread), all kept alive.
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
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._closed = False

    async def request(self, method: str, path_and_query: str) -> Response:
        """``path_and_query`` is appended to the base URL's path, already percent-encoded."""
        data = (f"{method} {self.path_prefix}{path_and_query}".encode("latin-1")
                + self._head_tail)
        async with self._slots:
            return await self._request(data)

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
            raise RuntimeError("ARI HTTP pool is closed")
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
        conn.waiter, conn.got_bytes = waiter, False
        assert conn.transport is not None
        conn.transport.write(data)
        timer = loop.call_later(self.timeout, _expire, waiter)
        try:
            response = await waiter
        except BaseException:
            conn.close()  # the answer may still come: this connection is out of step
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if conn.reusable and not conn.closed and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("ARI did not answer in time"))
