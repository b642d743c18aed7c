"""ESL connections on gevent: one socket, one reader greenlet, frames split by our codec.

:class:`CallConnection` is the outbound socket FreeSWITCH opens for one call (the dialplan's
``socket`` application); :class:`NodeConnection` is an inbound link to a node's port 8021.
Both read with :class:`~appserver.freeswitch.esl_codec.FrameParser`: frames are split by
``Content-Length``, events decoded lazily (a header value is URL-decoded when read), a
``BACKGROUND_JOB`` result is the event body, ``event json`` works, and a malformed or
oversized frame closes that one connection with a logged error.

Replies are matched to commands in order. :meth:`EslConnection.send` waits for its reply;
:meth:`EslConnection.send_nowait` writes commands without waiting, so the reader greenlet
itself can issue commands (their replies are checked and ``-ERR`` logged).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable

import gevent
import gevent.event
import gevent.socket

from appserver.freeswitch import esl_codec as codec

log = logging.getLogger("callyard.freeswitch")

EventCallback = Callable[[codec.LazyEvent], None]

# -ERR texts meaning "that channel is gone" (uuid_* api, sendmsg on a hung-up session)
_CHANNEL_GONE = re.compile(r"no such channel|call is not active|invalid session id", re.I)
_REPLIES = ("command/reply", "api/response")
_EVENTS = ("text/event-plain", "text/event-json")


class NotConnectedError(ConnectionError):
    """The ESL connection is closed (or was never opened): no reply will come."""


class Reply:
    """What :meth:`EslConnection.send` returns: the reply's headers (URL-decoded) and text."""

    __slots__ = ("body", "data", "headers")

    def __init__(self, frame: codec.Frame) -> None:
        self.headers = {k: codec.url_decode(v) for k, v in frame.headers.items()}
        self.body = frame.text
        self.data = self.body if frame.content_type == "api/response" else frame.reply_text


class EslConnection:
    """One ESL socket. :meth:`start` spawns its reader; ``closed`` is set when it ends."""

    __slots__ = (
        "_backlog", "_commands_sent", "_reader", "_received_at", "closed", "connected",
        "event_callback", "log_context", "sock",
    )  # fmt: skip
    max_frame_body = codec.MAX_BODY_BYTES

    def __init__(self, sock: gevent.socket.socket, on_event: EventCallback | None = None) -> None:
        self.sock = sock
        self.connected = True
        self.event_callback = on_event
        self.log_context: dict[str, str] = {}
        self.closed = gevent.event.Event()
        self._commands_sent: list[gevent.event.AsyncResult | None] = []
        self._received_at = 0.0
        self._reader: gevent.Greenlet | None = None
        # while a write waits for room in the socket: what other greenlets wrote meanwhile
        self._backlog: list[bytes | memoryview] | None = None

    def start(self) -> None:
        self._reader = gevent.spawn(self._read_frames)

    def _read_frames(self) -> None:
        parser = codec.FrameParser(self.max_frame_body)
        try:
            while data := self.sock.recv(65536):
                self._received_at = time.perf_counter()
                for frame in parser.feed(data):
                    self._handle_frame(frame)
                parser.check()
        except codec.ESLProtocolError as exc:
            log.error("bad ESL frame, closing the connection: %s", exc, extra=self.log_context)
        except OSError:
            pass  # the peer or close() ended it
        except Exception:
            log.exception("ESL reader failed", extra=self.log_context)
        finally:
            self._reader_finished()

    def _reader_finished(self) -> None:
        self.close()
        pending, self._commands_sent = self._commands_sent, []
        for result in pending:
            if result is not None:
                result.set_exception(NotConnectedError("the ESL connection closed"))
        self.closed.set()

    def _handle_frame(self, frame: codec.Frame) -> None:
        ctype = frame.content_type
        if ctype in _REPLIES:
            self._reply(frame)
        elif ctype in _EVENTS:
            event = codec.parse_event_lazy(frame)
            event.received = self._received_at
            self._on_event(event)
        elif ctype == "text/disconnect-notice":
            self._on_disconnect_notice(frame)
        else:
            self._on_other_frame(frame)

    def _reply(self, frame: codec.Frame) -> None:
        if not self._commands_sent:
            log.warning("unexpected %s from FreeSWITCH", frame.content_type,
                        extra=self.log_context)
            return
        result = self._commands_sent.pop(0)
        if result is not None:
            result.set(Reply(frame))
            return
        text = (frame.reply_text if frame.content_type == "command/reply" else frame.text).strip()
        if text.startswith("-ERR"):
            level = logging.DEBUG if self._refusal_expected(text) else logging.WARNING
            log.log(level, "FreeSWITCH refused a command: %s", text, extra=self.log_context)

    def _refusal_expected(self, text: str) -> bool:
        """A command that crossed a channel's hangup is refused as expected."""
        return bool(_CHANNEL_GONE.search(text))

    def _on_event(self, event: codec.LazyEvent) -> None:
        if self.event_callback is not None:
            self.event_callback(event)

    def _on_disconnect_notice(self, frame: codec.Frame) -> None:
        """FreeSWITCH closes the socket next."""

    def _on_other_frame(self, frame: codec.Frame) -> None:
        log.debug("ignored ESL frame %s", frame.content_type, extra=self.log_context)

    def send_nowait(self, commands: list[bytes]) -> bool:
        """Write encoded commands; their replies are checked by the reader, not awaited.

        Returns False (and writes nothing) when the connection is already gone.
        """
        if not self.connected:
            return False
        self._commands_sent.extend([None] * len(commands))
        try:
            self._write(b"".join(commands))
        except OSError as exc:
            log.info("write failed: %s", exc, extra=self.log_context)
            self.connected = False
            return False
        return True

    def send(self, command: str, timeout: float | None = None) -> Reply:
        """Send a command and wait for its reply (``gevent.Timeout`` after ``timeout``)."""
        return self.send_many([command], timeout)[0]

    def send_many(self, commands: list[str], timeout: float | None = None) -> list[Reply]:
        """Send ``commands`` in one write and wait for their replies, in order: one round
        trip for all of them (``gevent.Timeout`` after ``timeout``)."""
        if not self.connected:
            raise NotConnectedError("the ESL connection is closed")
        results = [gevent.event.AsyncResult() for _ in commands]
        self._commands_sent.extend(results)
        self._write("".join(f"{command}\n\n" for command in commands).encode("utf-8"))
        with gevent.Timeout(timeout):
            return [result.get() for result in results]

    def _write(self, data: bytes) -> None:
        """Write ``data`` whole, after what earlier writes left. One send() nearly always
        takes it all (gevent's sendall() asks the kernel for the buffer size, a syscall,
        and slices the data on every call). When it does not, this greenlet waits for room
        and writes the rest, and other greenlets' writes meanwhile queue behind it: bytes of
        two commands never interleave (FreeSWITCH reads the node's socket slowly, a byte
        per recv, so under load a write may wait)."""
        if self._backlog is not None:
            self._backlog.append(data)
            return
        sent = self.sock.send(data)
        if sent == len(data):
            return
        backlog: list[bytes | memoryview] = [memoryview(data)[sent:]]
        self._backlog = backlog
        try:
            while backlog:
                self.sock.sendall(backlog.pop(0))
        finally:
            self._backlog = None

    def close(self) -> None:
        """Close the socket (the reader then ends and sets ``closed``)."""
        self.connected = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(gevent.socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class CallConnection(EslConnection):
    """The outbound socket FreeSWITCH opens for one call; every event is about that call."""

    __slots__ = ("_channel_gone",)
    max_frame_body = codec.MAX_CALL_FRAME_BYTES  # anyone who reaches the port can connect

    def __init__(self, sock: gevent.socket.socket) -> None:
        super().__init__(sock)
        self._channel_gone = False  # hung up or handed back: refusals are expected from now on

    @property
    def controls_call(self) -> bool:
        """Still the live call's socket: connected, with no hangup or disconnect notice
        yet (after a transfer FreeSWITCH may hand the same call to a new socket)."""
        return self.connected and not self._channel_gone

    def release(self) -> None:
        """The call is over: drop the references that tie this connection into cycles (its
        event callback, its reader greenlet), so the call's objects are freed at once rather
        than by a full garbage collection."""
        self.event_callback = None
        self._reader = None

    def _refusal_expected(self, text: str) -> bool:
        return self._channel_gone or super()._refusal_expected(text)

    def _on_event(self, event: codec.LazyEvent) -> None:
        if event.name == "CHANNEL_HANGUP":
            self._channel_gone = True
        if self.event_callback is not None:
            self.event_callback(event)

    def _on_disconnect_notice(self, frame: codec.Frame) -> None:
        self._channel_gone = True
        if frame.headers.get("Content-Disposition") == "linger":
            # the hangup events have all arrived: release the socket
            self.send_nowait([codec.encode_command("exit")])
        # a plain disconnect (after exit, a transfer ...): FreeSWITCH closes the socket next


class NodeConnection(EslConnection):
    """An inbound link to one FreeSWITCH node (its ``event_socket`` port)."""

    __slots__ = ("_greeted",)

    def __init__(self, sock: gevent.socket.socket, on_event: EventCallback | None = None) -> None:
        super().__init__(sock, on_event)
        self._greeted = gevent.event.Event()  # auth/request (or a rejection) arrived

    @classmethod
    def open(
        cls, host: str, port: int, password: str, on_event: EventCallback | None = None,
        timeout: float = 5.0,
    ) -> NodeConnection:
        """Connect and authenticate; :class:`NotConnectedError` (or ``OSError``) if that fails."""
        sock = gevent.socket.create_connection((host, port), timeout)
        sock.settimeout(None)
        # commands go out as written (Nagle would hold one back until FreeSWITCH acks the
        # one before, which its delayed ack may defer by up to 40 ms)
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        conn = cls(sock, on_event)
        conn.start()
        if not conn._greeted.wait(timeout) or not conn.connected:
            conn.close()
            raise NotConnectedError(f"no auth/request from {host}:{port}")
        if conn.send(f"auth {password}").data != "+OK accepted":
            conn.close()
            raise NotConnectedError(f"{host}:{port} refused the password")
        return conn

    def _reader_finished(self) -> None:
        super()._reader_finished()
        self._greeted.set()

    def _on_other_frame(self, frame: codec.Frame) -> None:
        if frame.content_type == "auth/request":
            self._greeted.set()
        elif frame.content_type == "text/rude-rejection":
            log.error("FreeSWITCH rejected the connection: %s", frame.text.strip())
            self.connected = False
            self._greeted.set()
        else:
            super()._on_other_frame(frame)
