"""greenswitch's outbound and inbound sessions with our own reader.

greenswitch 0.0.19 reads line by line, URL-decodes whole event bodies before splitting them
(slow), crashes on ``event json`` (``ESLEvent.parse_data`` gets ``None``; every later
``send()`` then blocks forever) and glues a ``BACKGROUND_JOB`` result into
``headers['Content-Length']``. These subclasses keep greenswitch's objects and public
methods but replace the reader with :mod:`appserver.freeswitch.esl_codec`: frames are
split by ``Content-Length``, events decoded lazily, bodies kept apart, and a malformed
frame closes that one connection with a logged error.

Replies are matched to commands in order. ``send()`` (greenswitch's blocking call) still
works; ``send_nowait()`` writes a command without waiting for its reply, so the reader
greenlet itself can issue commands (replies are checked and ``-ERR`` logged).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.socket
from greenswitch.esl import (
    InboundESL,
    NotConnectedError,
    OutboundSession,
    OutboundSessionHasGoneAway,
)

from appserver.freeswitch import esl_codec as codec

log = logging.getLogger("callyard.freeswitch")

EventCallback = Callable[[codec.LazyEvent], None]

# -ERR texts meaning "that channel is gone" (uuid_* api, sendmsg on a hung-up session)
_CHANNEL_GONE = re.compile(r"no such channel|call is not active|invalid session id", re.I)


class Reply:
    """What ``send()`` returns: greenswitch-compatible ``headers`` and ``data``."""

    __slots__ = ("body", "data", "headers")

    def __init__(self, frame: codec.Frame) -> None:
        self.headers = {k: codec.url_decode(v) for k, v in frame.headers.items()}
        self.body = frame.text
        self.data = self.body if frame.content_type == "api/response" else frame.reply_text


class _FastReader:
    """Mixin: the frame reader shared by the outbound and inbound sessions."""

    sock: Any
    _commands_sent: list[gevent.event.AsyncResult | None]
    _lingering: bool
    _run: bool
    _channel_gone: bool  # our call's channel hung up: refusals are expected from now on
    _own_channel_events = False  # outbound: every event is about our call's channel
    _max_frame_body = codec.MAX_BODY_BYTES
    connected: bool
    log_context: dict[str, str]
    event_callback: EventCallback | None
    close_callback: Callable[[str], None] | None

    def _init_reader(self) -> None:
        self.log_context = {}
        self.event_callback = None
        self.close_callback = None
        self._auth_event = gevent.event.Event()
        self._received_at = 0.0
        self._channel_gone = False

    def start_event_handlers(self) -> None:
        self._receive_events_greenlet = gevent.spawn(self.receive_events)
        self._process_events_greenlet = None

    def receive_events(self) -> None:
        parser = codec.FrameParser(self._max_frame_body)
        reason = "eof"
        try:
            while self._run:
                data = self.sock.recv(65536)
                if not data:
                    break
                self._received_at = time.perf_counter()
                for frame in parser.feed(data):
                    self._handle_frame(frame)
                parser.check()
        except codec.ESLProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.error("bad ESL frame, closing the connection: %s", exc, extra=self.log_context)
        except OSError as exc:
            reason = f"socket error: {exc}"
        except Exception as exc:
            reason = f"error: {exc!r}"
            log.exception("ESL reader failed", extra=self.log_context)
        finally:
            self._reader_finished(reason)

    def _reader_finished(self, reason: str) -> None:
        self._run = False
        self.connected = False
        pending, self._commands_sent = self._commands_sent, []
        for result in pending:
            if result is not None:
                result.set_exception(OutboundSessionHasGoneAway())
        self._auth_event.set()
        self.close_socket()
        if self.close_callback is not None:
            self.close_callback(reason)

    def _handle_frame(self, frame: codec.Frame) -> None:
        ctype = frame.content_type
        if ctype in ("command/reply", "api/response"):
            if not self._commands_sent:
                log.warning("unexpected %s from FreeSWITCH", ctype, extra=self.log_context)
                return
            result = self._commands_sent.pop(0)
            if result is not None:
                result.set(Reply(frame))
            elif (frame.reply_text if ctype == "command/reply" else frame.text).startswith("-ERR"):
                text = (frame.reply_text or frame.text).strip()
                # a command that crossed the caller's hangup (or a B-leg's) is expected
                level = (
                    logging.DEBUG
                    if self._channel_gone or _CHANNEL_GONE.search(text)
                    else logging.WARNING
                )
                log.log(level, "FreeSWITCH refused a command: %s", text, extra=self.log_context)
        elif ctype in ("text/event-plain", "text/event-json"):
            if self.event_callback is not None or self._own_channel_events:
                event = codec.parse_event_lazy(frame)
                event.received = self._received_at
                if self._own_channel_events and event.name == "CHANNEL_HANGUP":
                    self._channel_gone = True
                if self.event_callback is not None:
                    self.event_callback(event)
        elif ctype == "text/disconnect-notice":
            if frame.headers.get("Content-Disposition") == "linger":
                self._lingering = True
            self.on_disconnect_notice(frame)
        elif ctype == "auth/request":
            self._auth_event.set()
        elif ctype == "text/rude-rejection":
            log.error("FreeSWITCH rejected the connection: %s", frame.text.strip())
            self.connected = False
            self._auth_event.set()
        else:
            log.debug("ignored ESL frame %s", ctype, extra=self.log_context)

    def on_disconnect_notice(self, frame: codec.Frame) -> None:
        pass

    def close_socket(self) -> None:
        """Really close: greenswitch's ``makefile()`` would otherwise keep the fd open."""
        sock = getattr(self, "sock", None)
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(gevent.socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
        sock_file = getattr(self, "sock_file", None)
        if sock_file is not None:
            with contextlib.suppress(OSError):
                sock_file.close()

    def send_nowait(self, commands: list[bytes]) -> bool:
        """Write encoded commands; their replies are checked by the reader, not awaited.

        Returns False (and writes nothing) when the connection is already gone.
        """
        if not self.connected:
            return False
        self._commands_sent.extend([None] * len(commands))
        try:
            self.sock.sendall(b"".join(commands))
        except OSError as exc:
            log.info("write failed: %s", exc, extra=self.log_context)
            self.connected = False
            return False
        return True

    def send(self, data: str, timeout: float | None = None) -> Reply:
        """Send a command and wait for its reply (``gevent.Timeout`` after ``timeout``)."""
        if not self.connected:
            raise NotConnectedError()
        result = gevent.event.AsyncResult()
        self._commands_sent.append(result)
        self.sock.sendall((data + "\n\n").encode("utf-8"))
        reply: Reply = result.get(timeout=timeout)
        return reply


class CallSession(_FastReader, OutboundSession):
    """One outbound socket from FreeSWITCH: a call handed to Callyard."""

    _own_channel_events = True
    _max_frame_body = codec.MAX_CALL_FRAME_BYTES  # anyone who reaches the port can connect

    def __init__(self, client_address: tuple[str, int], sock: gevent.socket.socket) -> None:
        self._init_reader()
        super().__init__(client_address, sock)

    @property
    def controls_call(self) -> bool:
        """Still the live call's socket: connected, with no hangup or disconnect notice
        yet (after a transfer FreeSWITCH may hand the same call to a new socket)."""
        return bool(self.connected) and not self._channel_gone

    def release(self) -> None:
        """The call is over: drop the references that tie this session into cycles (its
        event callback, its reader greenlet, greenswitch's handler lists), so the call's
        objects are freed at once rather than by a full garbage collection."""
        self.event_callback = None
        self._receive_events_greenlet = None
        self.event_handlers.clear()

    def on_disconnect_notice(self, frame: codec.Frame) -> None:
        self._outbound_connected = False
        self._channel_gone = True
        if frame.headers.get("Content-Disposition") == "linger":
            # the hangup events have all arrived: release the socket
            self.send_nowait([codec.encode_command("exit")])
        # a plain disconnect (after exit, a transfer ...): FreeSWITCH closes the socket next

    def close(self) -> None:
        self._run = False
        self.connected = False
        self.close_socket()


class NodeSession(_FastReader, InboundESL):
    """Inbound ESL to one FreeSWITCH node, safe with ``event json`` and ``bgapi``."""

    def __init__(self, host: str, port: int, password: str, timeout: float = 5) -> None:
        self._init_reader()
        super().__init__(host, port, password, timeout)
        self.disconnected = gevent.event.Event()

    def connect(self) -> None:
        self.sock = gevent.socket.create_connection((self.host, self.port), self.timeout)
        self.sock.settimeout(None)
        self.connected = True
        self._run = True
        self.start_event_handlers()
        if not self._auth_event.wait(self.timeout) or not self.connected:
            self.close()
            raise NotConnectedError(f"no auth/request from {self.host}:{self.port}")
        reply = self.send(f"auth {self.password}")
        if reply.data != "+OK accepted":
            self.close()
            raise NotConnectedError(f"{self.host}:{self.port} refused the password")

    def _reader_finished(self, reason: str) -> None:
        super()._reader_finished(reason)
        self.disconnected.set()

    def close(self) -> None:
        self._run = False
        self.connected = False
        self.close_socket()
