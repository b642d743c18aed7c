"""FreeSWITCH Event Socket (ESL), the server's half: what FreeSWITCH writes, and the reader
of what a client writes. Used by the simulator only; the worker's half (framing, event
decoding, commands) is :mod:`appserver.freeswitch.esl_codec`. Both are checked byte for
byte against raw captures of FreeSWITCH 1.10 (tests/test_esl_codec.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from appserver.freeswitch.esl_codec import Frame, Framing, parse_header_block

DISCONNECT_TEXT = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"

# switch_utils.h SWITCH_URL_UNSAFE, plus everything below ' ' and above '~'.
_URL_UNSAFE = b'\r\n #%&+:;<=>?@[\\]^`{|}"'
_HEX = b"0123456789ABCDEF"
_ENCODE_TABLE: list[str] = [
    f"%{b:02X}" if (b < 0x20 or b > 0x7E or b in _URL_UNSAFE) else chr(b) for b in range(256)
]
_HEX_DIGITS = set(_HEX + b"abcdef")


@lru_cache(maxsize=16384)
def url_encode(value: str) -> str:
    """``switch_url_encode``: escape unsafe bytes, keep already-escaped ``%XX`` sequences."""
    if value.isascii() and value.isalnum():
        return value
    raw = value.encode("utf-8")
    out: list[str] = []
    n = len(raw)
    for i, b in enumerate(raw):
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX_DIGITS and raw[i + 2] in _HEX_DIGITS:
            out.append("%")
        else:
            out.append(_ENCODE_TABLE[b])
    return "".join(out)


# ---------------------------------------------------------------- encoding


def encode_frame(headers: Iterable[tuple[str, str]], body: bytes | str = b"") -> bytes:
    """Envelope headers in the given order, ``Content-Length`` added last when a body exists."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    lines = "".join(f"{k}: {v}\n" for k, v in headers)
    if data:
        lines += f"Content-Length: {len(data)}\n"
    return (lines + "\n").encode("utf-8") + data


def plain_pairs(headers: Iterable[tuple[str, str]]) -> str:
    """Header lines as ``switch_event_serialize`` writes them (values URL-encoded)."""
    return "".join([f"{k}: {url_encode(v)}\n" for k, v in headers])


_json_string = json.JSONEncoder(ensure_ascii=False).encode


def json_pairs(headers: Iterable[tuple[str, str]]) -> str:
    """Headers as the members of a cJSON object, comma-separated, without the braces."""
    dumps = _json_string
    return ",".join([f"{dumps(k)}:{dumps(v)}" for k, v in headers])


def serialize_plain(headers: Iterable[tuple[str, str]], body: str = "") -> bytes:
    """``switch_event_serialize``: encoded header lines, then body with its own length."""
    text = plain_pairs(headers)
    if body:
        raw = body.encode("utf-8")
        return (text + f"Content-Length: {len(raw)}\n\n").encode("utf-8") + raw
    return (text + "\n").encode("utf-8")


def serialize_json(headers: Iterable[tuple[str, str]], body: str = "") -> bytes:
    """cJSON's compact print; repeated headers are repeated keys, as FreeSWITCH sends them."""
    items = list(headers)
    if body:
        items += [("Content-Length", str(len(body.encode("utf-8")))), ("_body", body)]
    return ("{" + json_pairs(items) + "}").encode("utf-8")


def event_frame(headers: Iterable[tuple[str, str]], body: str = "", fmt: str = "plain") -> bytes:
    payload = serialize_json(headers, body) if fmt == "json" else serialize_plain(headers, body)
    ctype = "text/event-json" if fmt == "json" else "text/event-plain"
    return f"Content-Length: {len(payload)}\nContent-Type: {ctype}\n\n".encode() + payload


def command_reply(text: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    return encode_frame([("Content-Type", "command/reply"), ("Reply-Text", text), *extra])


def api_response(text: str) -> bytes:
    data = text.encode("utf-8")
    head = f"Content-Type: api/response\nContent-Length: {len(data)}\n\n"
    return head.encode("utf-8") + data


def disconnect_notice(
    uuid: str = "", disposition: str = "", channel_name: str = "", linger: bool = False
) -> bytes:
    """The ``text/disconnect-notice`` frames: plain (inbound), disconnect or linger (outbound)."""
    headers = [("Content-Type", "text/disconnect-notice")]
    if uuid:
        headers.append(("Controlled-Session-UUID", uuid))
    if disposition:
        headers.append(("Content-Disposition", disposition))
    if linger:
        headers += [("Channel-Name", channel_name), ("Linger-Time", "-1"), ("Content-Length", "0")]
        return encode_frame(headers)
    return encode_frame(headers, DISCONNECT_TEXT)


# ---------------------------------------------------------------- client requests


@dataclass(slots=True)
class Request(Frame):
    """A command a client sends to FreeSWITCH: its first line, header lines, optional body."""

    command: str = ""


class RequestParser(Framing[Request]):
    """What a client writes: a command line, then header lines (FreeSWITCH's framing)."""

    __slots__ = ()

    def _head(self, block: bytes) -> Request:
        # a person at a terminal may type CRLF
        text = block.decode("utf-8", "replace").replace("\r", "").lstrip("\n")
        command, _, rest = text.partition("\n")
        headers = parse_header_block(rest.encode()) if rest else {}
        return Request(headers, command=command.strip())
