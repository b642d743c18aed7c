"""FreeSWITCH Event Socket (ESL), the client's half: framing, event decoding, commands.

Pure functions and no I/O. The FreeSWITCH worker reads frames and events with it and writes
its commands; the simulator's half (what FreeSWITCH writes: events, replies, notices, and
the reader of what a client writes) is :mod:`appserver.devkit.sim.esl.server_codec`. The
byte layout follows FreeSWITCH 1.10 (checked against raw captures in tests):

* A frame is header lines ``Name: value\\n`` ended by an empty line; when the headers
  carry ``Content-Length`` exactly that many body bytes follow (no terminator).
* Event frames put ``Content-Length`` *before* ``Content-Type`` (``text/event-plain`` or
  ``text/event-json``); command replies carry only ``Content-Type`` and ``Reply-Text``.
* Inside a plain event body every header value is URL-encoded with FreeSWITCH's
  ``switch_url_encode`` rules; an event with its own body ends its headers with
  ``Content-Length: n`` and an empty line, followed by the body.
* JSON event bodies are one compact object (``_body`` holds the event body), with no
  trailing LF.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

MAX_HEADER_BYTES = 256 * 1024
# A frame body FreeSWITCH sends on a call's (outbound) socket is one event or one reply: an
# event with every channel variable is ~10 KB in the captures (tens of KB with many SIP
# headers), so 1 MiB is ample headroom and bounds what one socket can make the worker hold.
MAX_CALL_FRAME_BYTES = 1024 * 1024
# Inbound links to our own nodes may carry large ``api`` / ``bgapi`` results (show channels).
MAX_BODY_BYTES = 16 * 1024 * 1024


class ESLProtocolError(ValueError):
    """A frame that does not follow the Event Socket framing rules."""


class UnsafeValue(ValueError):
    """A value that must not be written: it would leave its line of the command (control
    characters: after "\n\n" the rest runs as a command of its own) or be expanded by
    FreeSWITCH (``${...}``). The command is refused, never written."""


def url_decode(value: str) -> str:
    return unquote(value) if "%" in value else value


@dataclass(slots=True)
class Frame:
    """One ESL frame: envelope headers (as on the wire, not decoded) and the body bytes."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return url_decode(self.headers.get("Reply-Text", ""))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


F = TypeVar("F", bound=Frame)


class Framing(Generic[F]):
    """Incremental ESL framing: header lines ended by an empty line, then exactly
    ``Content-Length`` body bytes. ``feed(bytes)`` returns the frames completed so far;
    :meth:`_head` says what a header block holds.

    A malformed frame raises :class:`ESLProtocolError`; the connection is then unusable
    (framing is lost) and must be closed by the caller.
    """

    __slots__ = ("_buf", "_error", "_max_body", "_pending")

    def __init__(self, max_body: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._pending: tuple[F, int] | None = None
        self._error: ESLProtocolError | None = None
        self._max_body = max_body

    def feed(self, data: bytes) -> list[F]:
        """Complete frames so far. Frames before a malformed one are still returned; the
        error is raised by :meth:`check` (and by the next ``feed``)."""
        self.check()
        frames: list[F] = []
        try:
            self._parse(data, frames)
        except ESLProtocolError as exc:
            if not frames:
                raise
            self._error = exc
        return frames

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def _parse(self, data: bytes, frames: list[F]) -> None:
        self._buf += data
        buf = self._buf
        while True:
            if self._pending is None:
                # Blank lines between frames are skipped (FreeSWITCH sends none).
                while buf[:1] == b"\n":
                    del buf[:1]
                end = buf.find(b"\n\n")
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise ESLProtocolError(
                            f"header block longer than {MAX_HEADER_BYTES} bytes without an end"
                        )
                    break
                frame = self._head(bytes(buf[:end]))
                del buf[: end + 2]
                self._pending = (frame, _content_length(frame.headers, self._max_body))
            frame, length = self._pending
            if len(buf) < length:
                break
            frame.body = bytes(buf[:length])
            del buf[:length]
            self._pending = None
            frames.append(frame)

    def _head(self, block: bytes) -> F:
        raise NotImplementedError

    @property
    def buffered(self) -> int:
        return len(self._buf)


class FrameParser(Framing[Frame]):
    """The frames FreeSWITCH writes: envelope headers, then the body."""

    __slots__ = ()

    def _head(self, block: bytes) -> Frame:
        return Frame(parse_header_block(block))


def _content_length(headers: Mapping[str, str], max_body: int = MAX_BODY_BYTES) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    if not raw.isdigit():
        raise ESLProtocolError(f"bad Content-Length {raw!r}")
    length = int(raw)
    if length > max_body:  # refused at the header: the body is never buffered
        raise ESLProtocolError(f"frame body of {length} bytes exceeds the {max_body}-byte limit")
    return length


def parse_header_block(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        name, sep, value = line.partition(": ")
        if not sep:
            if line.endswith(":"):  # "Name:" with an empty value
                headers[line[:-1]] = ""
                continue
            raise ESLProtocolError(f"header line without ': ': {line[:80]!r}")
        headers[name] = value
    return headers


# ---------------------------------------------------------------- events


@dataclass(slots=True)
class EslEvent:
    """A decoded event: header values already URL-decoded, plus the event body.

    FreeSWITCH events may repeat a header (``Hangup-Cause`` in CHANNEL_HANGUP_COMPLETE):
    ``pairs`` keeps every header in wire order, ``headers`` the first value of each name
    (what ``switch_event_get_header`` returns).
    """

    headers: dict[str, str]
    body: str = ""
    fmt: str = "plain"
    pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass(slots=True)
class LazyEvent:
    """An event whose headers are found, and URL-decoded, only when read.

    A plain event keeps its header block as text (``head``): reading a header is one search
    in it, so an event with hundreds of channel variables costs the few lookups the driver
    makes, not a split of every line. ``raw`` holds headers already split (JSON events,
    tests) and caches what was found.
    """

    raw: dict[str, str]
    body: str = ""
    head: str = ""
    _decoded: dict[str, str] = field(default_factory=dict)
    received: float = 0.0  # perf_counter() when its bytes were read (set by readers)

    @property
    def name(self) -> str:
        return self.get("Event-Name")

    def get(self, name: str, default: str = "") -> str:
        value = self.raw.get(name)
        if value is None:
            value = _find_header(self.head, name) if self.head else None
            if value is None:
                return default
            self.raw[name] = value
        if "%" not in value:
            return value
        cached = self._decoded.get(name)
        if cached is None:
            cached = self._decoded[name] = unquote(value)
        return cached


def _find_header(head: str, name: str) -> str | None:
    """The first value of ``name`` in a header block (still encoded), or None."""
    key = name + ": "
    if head.startswith(key):
        start = len(key)
    else:
        at = head.find("\n" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = head.find("\n", start)
    return head[start:] if end < 0 else head[start:end]


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


def split_plain_pairs(data: str) -> tuple[list[tuple[str, str]], str]:
    """Split a ``text/event-plain`` body into raw (still encoded) header pairs and body.

    The event's own ``Content-Length`` (present only with a body) is not part of the pairs.
    """
    head, sep, rest = data.partition("\n\n")
    pairs: list[tuple[str, str]] = []
    length = ""
    for line in head.split("\n"):
        name, colon, value = line.partition(": ")
        if colon:
            if name == "Content-Length" and sep:
                length = value
            else:
                pairs.append((name, value))
        elif line:
            raise ESLProtocolError(f"event header line without ': ': {line[:80]!r}")
    body = ""
    if length:
        if not length.isdigit():
            raise ESLProtocolError(f"bad event Content-Length {length!r}")
        body = rest.encode("utf-8")[: int(length)].decode("utf-8", "replace")
    return pairs, body


def split_plain_body(data: str) -> tuple[dict[str, str], str]:
    """Like :func:`split_plain_pairs` but a dict (first value of a repeated header wins)."""
    pairs, body = split_plain_pairs(data)
    return _first_values(pairs), body


class _Pairs(list[tuple[str, object]]):
    """A JSON object kept as its (key, value) pairs, so repeated keys survive."""


def parse_event(frame: Frame) -> EslEvent:
    """Decode a ``text/event-plain`` or ``text/event-json`` frame."""
    ctype = frame.content_type
    if ctype == "text/event-plain":
        raw, body = split_plain_pairs(frame.text)
        pairs = [(k, url_decode(v)) for k, v in raw]
        return EslEvent(_first_values(pairs), body, "plain", pairs)
    if ctype == "text/event-json":
        try:
            data = json.loads(frame.body, object_pairs_hook=_Pairs)
        except ValueError as exc:
            raise ESLProtocolError(f"bad JSON event body: {exc}") from None
        if not isinstance(data, _Pairs):
            raise ESLProtocolError("JSON event body is not an object")
        body = ""
        pairs = []
        for k, v in data:
            if k == "_body":
                body = str(v)
            elif not (k == "Content-Length" and any(key == "_body" for key, _ in data)):
                pairs.append((str(k), str(v)))
        return EslEvent(_first_values(pairs), body, "json", pairs)
    raise ESLProtocolError(f"not an event frame: Content-Type {ctype!r}")


def parse_event_lazy(frame: Frame) -> LazyEvent:
    """Fast path for the driver: plain events searched lazily, JSON decoded at once."""
    if frame.content_type == "text/event-plain":
        text = frame.text
        end = text.find("\n\n")
        if end < 0:
            end = len(text)
        # Every line of a well-formed header block holds ": " exactly once (values are
        # URL-encoded, a blank is %20): a cheap check that sends anything else, and events
        # with a body of their own, through the full split (which names a bad line).
        own_body = end + 2 < len(text)
        if own_body or text.count(": ", 0, end) != text.count("\n", 0, end) + 1:
            raw, body = split_plain_body(text)
            return LazyEvent(raw, body)
        return LazyEvent({}, "", text[:end])
    event = parse_event(frame)
    return LazyEvent(event.headers, event.body)


# ---------------------------------------------------------------- commands


def encode_command(command: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A client command: ``api status``, or ``sendmsg`` with its header lines. A line break
    inside the command or a header would end it early: :class:`UnsafeValue` instead."""
    text = command + "".join([f"\n{k}: {v}" for k, v in headers])
    if text.count("\n") != len(headers) or "\r" in text:
        raise UnsafeValue(f"line break inside an ESL command line: {text[:80]!r}")
    return (text + "\n\n").encode("utf-8")


def sendmsg(
    app: str, arg: str = "", event_uuid: str = "", uuid: str = "", lock: bool = False
) -> bytes:
    """``sendmsg`` executing ``app``; ``event_uuid`` comes back as ``Application-UUID``."""
    headers = [("call-command", "execute"), ("execute-app-name", app)]
    if arg:
        headers.append(("execute-app-arg", arg))
    if event_uuid:
        headers.append(("Event-UUID", event_uuid))
    if lock:
        headers.append(("event-lock", "true"))
    return encode_command(f"sendmsg {uuid}".rstrip(), headers)
