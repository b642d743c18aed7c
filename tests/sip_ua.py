"""A small asyncio SIP user agent for tests: UDP, the part of RFC 3261 that FreeSWITCH,
Asterisk, Kamailio and SIPp peers need, with RTP media (G.711 audio, RFC 4733 DTMF events).

* ``SipEndpoint``: a UAS answering every INVITE by a policy (answer, busy, no_answer, reject)
  with the codec it accepts: the stand-in for LiveKit SIP, agents' phones, engine nodes.
* ``SipCaller``: a UAC placing calls (a caller's phone), with digest auth.
* ``Call``: one dialog on either side, with its ``RtpSession`` (audio, DTMF, receive counters).

Also the SIP text helpers every SIP test shares (``SipMessage``, ``parse_sip``, ``build``,
``response_to``, ``digest_authorization``) and SDP (``Sdp``).

    async with SipEndpoint("127.0.0.1", 5080, audio="tone") as ep, SipCaller() as phone:
        call = await phone.dial(f"sip:9999@127.0.0.1:{ep.port}")
        assert await call.wait_final() == 200
        await call.send_dtmf("12#")
        far = await ep.wait_invite()
        await wait_until(lambda: far.rtp.digits == "12#")
        await call.bye()

Not covered: TCP/TLS, strict routing beyond the basics, forking (one dialog per Call-ID),
SRTP, codecs other than G.711 for sending audio (others are negotiated, and counted when
received).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import struct
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

log = logging.getLogger("sip_ua")

Addr = tuple[str, int]
Policy = Literal["answer", "busy", "no_answer", "reject"]
Audio = Literal["tone", "silence"]
EndReason = Literal["local_bye", "remote_bye", "cancelled", "rejected"]

# What LiveKit SIP accepts, in its order of preference.
LIVEKIT_CODECS = ("PCMU", "PCMA", "G722", "opus")
T1 = 0.5  # RFC 3261 round-trip estimate: first retransmission interval (seconds)
PTIME = 0.02  # one RTP packet per 20 ms
SAMPLES = 160  # 8 kHz samples in 20 ms


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until true; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- SIP text

_COMPACT = {"via": ("v",), "call-id": ("i",), "from": ("f",), "to": ("t",), "contact": ("m",)}


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.first_line.split()[1])

    @property
    def method(self) -> str:
        return self.first_line.split()[0]

    @property
    def ruri(self) -> str:
        return self.first_line.split()[1]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (compact forms too), comma-joined values split."""
        names = {name.lower(), *_COMPACT.get(name.lower(), ())}
        return [v for k, line in self.headers if k.lower() in names for v in _split(line)]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.get("CSeq") or "0 ?").partition(" ")
        return int(number), method.strip()

    @property
    def branch(self) -> str:
        return param(self.get("Via") or "", "branch") or ""

    def encode(self) -> bytes:
        return build(self.first_line, self.headers, self.body)


def _split(line: str) -> list[str]:
    """Split a header line at commas outside <...> and quotes (Via, Route, Contact lists)."""
    if "," not in line or line.lstrip().lower().startswith("digest"):
        return [line]
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "<>":
            depth += 1 if ch == "<" else -1
        elif ch == "," and not quoted and depth == 0:
            parts.append(line[start:i].strip())
            start = i + 1
    return [*parts, line[start:].strip()]


def parse_sip(data: bytes) -> SipMessage | None:
    """A SIP message, or None for anything that is not one (keep-alives, garbage)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if len(lines[0].split()) < 3:
        return None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return SipMessage(lines[0], headers, body)


def build(first_line: str, headers: Sequence[tuple[str, str]], body: str = "") -> bytes:
    lines = [first_line, *(f"{k}: {v}" for k, v in headers if k.lower() != "content-length")]
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def response_to(
    request: SipMessage,
    status: int,
    reason: str,
    *extra: tuple[str, str],
    to_tag: str | None = None,
    body: str = "",
) -> bytes:
    """The response to ``request``; a final or ringing one gets a To tag (``to_tag`` or new)."""
    headers = [("Via", v) for v in request.get_all("Via")]
    headers += [("Record-Route", v) for v in request.get_all("Record-Route")]
    to = request.get("To") or ""
    if status > 100 and tag_of(to) is None:
        to += f";tag={to_tag or new_tag()}"
    headers += [
        ("From", request.get("From") or ""),
        ("To", to),
        ("Call-ID", request.call_id),
        ("CSeq", request.get("CSeq") or ""),
        *extra,
    ]
    return build(f"SIP/2.0 {status} {reason}", headers, body)


def new_tag() -> str:
    return uuid.uuid4().hex[:10]


def new_branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex


def uri_of(value: str) -> str:
    """The URI in a header value: ``"Bob" <sip:b@h>;tag=1`` -> ``sip:b@h``."""
    inside = re.search(r"<([^>]*)>", value)
    return inside.group(1) if inside else value.split(";")[0].strip()


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header value (outside its <URI>)."""
    found = re.search(rf";\s*{name}=([^;,\s]+)", value.rpartition(">")[2])
    return found.group(1) if found else None


def tag_of(value: str) -> str | None:
    return param(value, "tag")


def uri_host_port(uri: str) -> Addr:
    """``sip:user@host:port;params`` -> (host, port), port 5060 by default."""
    hostport = uri.split(":", 1)[1].split(";")[0].split("?")[0].rpartition("@")[2]
    host, _, port = hostport.partition(":")
    return host, int(port or 5060)


def uri_user(uri: str) -> str:
    rest = uri.split(":", 1)[1]
    return rest.partition("@")[0] if "@" in rest else ""


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_authorization(
    challenge: str, method: str, uri: str, username: str, password: str
) -> str:
    """The Authorization value answering a ``WWW-/Proxy-Authenticate`` MD5 challenge
    (RFC 2617; qop=auth when offered)."""
    fields = {
        k: quoted if quoted else bare
        for k, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', challenge)
    }
    realm, nonce = fields["realm"], fields["nonce"]
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in fields.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    parts += [f'response="{response}"', "algorithm=MD5"]
    if "opaque" in fields:
        parts.append(f'opaque="{fields["opaque"]}"')
    return "Digest " + ", ".join(parts)


# ----------------------------------------------------------------------------- SDP

_STATIC_PAYLOADS = {
    0: "PCMU/8000",
    3: "GSM/8000",
    8: "PCMA/8000",
    9: "G722/8000",
    13: "CN/8000",
    18: "G729/8000",
}
_OFFERED = {  # codec name -> payload type and rtpmap in our offers
    "PCMU": (0, "PCMU/8000"),
    "PCMA": (8, "PCMA/8000"),
    "G722": (9, "G722/8000"),
    "GSM": (3, "GSM/8000"),
    "G729": (18, "G729/8000"),
    "opus": (111, "opus/48000/2"),
    "telephone-event": (101, "telephone-event/8000"),
}
_NOT_AUDIO = {"telephone-event", "cn"}


@dataclass
class Sdp:
    """The audio part of an SDP body: where to send RTP and the payload types, in order."""

    ip: str
    port: int
    rtpmap: dict[int, str]  # payload type -> "PCMU/8000", in the m= line's order
    fmtp: dict[int, str] = field(default_factory=dict)

    @property
    def codecs(self) -> list[str]:
        return [encoding.split("/")[0] for encoding in self.rtpmap.values()]

    def payload_type(self, codec: str) -> int | None:
        for pt, encoding in self.rtpmap.items():
            if encoding.split("/")[0].lower() == codec.lower():
                return pt
        return None

    @classmethod
    def parse(cls, body: str) -> Sdp | None:
        ip, port, order = "", 0, []
        rtpmap: dict[int, str] = {}
        fmtp: dict[int, str] = {}
        in_audio = False
        for line in body.splitlines():
            key, _, value = line.strip().partition("=")
            if key == "m":
                in_audio = value.startswith("audio ")
                if in_audio:
                    words = value.split()
                    port, order = int(words[1]), [int(pt) for pt in words[3:]]
            elif key == "c" and (in_audio or not port):
                ip = value.split()[-1].split("/")[0]
            elif key == "a" and in_audio and value.startswith(("rtpmap:", "fmtp:")):
                attribute, _, rest = value.partition(":")
                pt, _, text = rest.partition(" ")
                (rtpmap if attribute == "rtpmap" else fmtp)[int(pt)] = text.strip()
        if not order:
            return None
        named = {pt: rtpmap.get(pt) or _STATIC_PAYLOADS.get(pt, f"unknown-{pt}") for pt in order}
        return cls(ip, port, named, fmtp)

    @classmethod
    def offer(cls, ip: str, port: int, codecs: Sequence[str]) -> Sdp:
        """Our offer: ``codecs`` (names from the table above) plus telephone-event/8000."""
        unknown = [c for c in codecs if c not in _OFFERED]
        if unknown:
            raise ValueError(f"cannot offer {unknown}: known codecs are {sorted(_OFFERED)}")
        entries = [_OFFERED[c] for c in (*codecs, "telephone-event")]
        return cls(ip, port, dict(entries), {101: "0-16"})

    def answer(self, accept: Sequence[str], ip: str, port: int) -> Sdp | None:
        """The answer choosing the first offered codec in ``accept`` (with telephone-event
        when offered), or None when there is none."""
        accepted = {c.lower() for c in accept}
        chosen = next((c for c in self.codecs if c.lower() in accepted), None)
        if chosen is None:
            return None
        both = (self.payload_type(chosen), self.payload_type("telephone-event"))
        pts = [pt for pt in both if pt is not None]
        return Sdp(
            ip,
            port,
            {pt: self.rtpmap[pt] for pt in pts},
            {pt: self.fmtp[pt] for pt in pts if pt in self.fmtp},
        )

    def render(self) -> str:
        lines = [
            "v=0",
            f"o=- {self.port} 1 IN IP4 {self.ip}",
            "s=callyard-test",
            f"c=IN IP4 {self.ip}",
            "t=0 0",
            f"m=audio {self.port} RTP/AVP {' '.join(map(str, self.rtpmap))}",
            *(f"a=rtpmap:{pt} {encoding}" for pt, encoding in self.rtpmap.items()),
            *(f"a=fmtp:{pt} {text}" for pt, text in self.fmtp.items()),
            "a=ptime:20",
            "a=sendrecv",
        ]
        return "\r\n".join(lines) + "\r\n"


# ----------------------------------------------------------------------------- RTP

DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 event codes 0-15


def _ulaw_to_linear(byte: int) -> int:
    byte = ~byte & 0xFF
    exponent, mantissa = (byte >> 4) & 7, byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def _alaw_to_linear(byte: int) -> int:
    byte ^= 0x55
    segment, value = (byte & 0x70) >> 4, (byte & 0x0F) << 4
    value += 8 if segment == 0 else 0x108
    if segment > 1:
        value <<= segment - 1
    return value if byte & 0x80 else -value


_DECODE = {  # static payload type -> byte -> linear sample
    0: [_ulaw_to_linear(b) for b in range(256)],
    8: [_alaw_to_linear(b) for b in range(256)],
}
AUDIBLE_PEAK = 512  # a G.711 packet whose peak reaches this (about -36 dBFS) carries sound


def _encode(samples: Sequence[float], pt: int) -> bytes:
    """G.711 bytes for linear samples (by nearest code: only run once per tone below)."""
    table = _DECODE[pt]
    return bytes(min(range(256), key=lambda b: abs(table[b] - s)) for s in samples)


# 400 Hz is exactly 20 samples at 8 kHz: one 20 ms packet of tone fits any packet boundary.
_TONE = [8000 * math.sin(2 * math.pi * 400 * n / 8000) for n in range(SAMPLES)]
G711_FRAMES = {  # (payload type, "tone" | "silence") -> one 20 ms packet
    (pt, audio): _encode(_TONE if audio == "tone" else [0] * SAMPLES, pt)
    for pt in _DECODE
    for audio in ("tone", "silence")
}


@dataclass
class RtpRate:
    """Received RTP per second over a recent window."""

    packets: float
    bytes: float
    audible: float  # G.711 packets carrying sound (not silence)


class RtpSession(asyncio.DatagramProtocol):
    """A call's media socket: sends G.711 ``audio`` ("tone": 400 Hz, "silence", None: no
    audio) and RFC 4733 events every 20 ms to the far end, and counts what arrives."""

    def __init__(self, host: str, audio: Audio | None) -> None:
        self.host = host
        self.port = 0
        self.audio = audio
        self.remote: Addr | None = None
        self.codec = ""
        self.payload_type = 0
        # telephone-event payload types received as events (ours and theirs once negotiated)
        self.event_payload_types = {101}
        self._event_pt: int | None = None  # the one we send events with
        self.tx_packets = 0
        self.rx_packets = 0
        self.rx_bytes = 0
        self.rx_audible = 0
        self.rx_payload_types: Counter[int] = Counter()
        self.digits = ""  # RFC 4733 events received, one character per key press
        self._arrivals: deque[tuple[float, int, bool]] = deque(maxlen=3000)
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._queue: deque[tuple[int, int, bool, bool] | asyncio.Future[None] | None] = deque()
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc = random.randrange(1 << 32)
        self._event_ts = 0
        self._last_event: tuple[int, int] | None = None  # (ssrc, timestamp) of the last event
        self._last_event_ended = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, 0)
        )
        self.port = self._transport.get_extra_info("sockname")[1]

    def start(self, local: Sdp, remote: Sdp) -> None:
        """Media negotiated: send to the far end's address, with the first of its codecs that
        we listed too, at the payload types it declared."""
        self.remote = (remote.ip, remote.port)
        common = [
            c
            for c in remote.codecs
            if c.lower() not in _NOT_AUDIO and local.payload_type(c) is not None
        ]
        if not common:
            raise ValueError(f"no common codec: {local.codecs} / {remote.codecs}")
        self.codec = common[0]
        self.payload_type = remote.payload_type(self.codec) or 0
        self._event_pt = remote.payload_type("telephone-event")
        self.event_payload_types = {
            pt for pt in (local.payload_type("telephone-event"), self._event_pt) if pt is not None
        }
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    @property
    def started(self) -> bool:
        return self._sender is not None

    async def send_dtmf(self, digits: str, duration: float = 0.1, pause: float = 0.1) -> None:
        """Send each digit as RFC 4733 events (marker on the first packet, one timestamp,
        duration growing by 20 ms, three end packets), ``pause`` seconds apart; returns when
        all are sent."""
        if self._sender is None:
            raise RuntimeError("no media yet: the call has no negotiated RTP")
        if self._event_pt is None:
            raise RuntimeError("the far end did not negotiate telephone-event")
        bad = [d for d in digits.upper() if d not in DTMF_EVENTS]
        if bad or not digits:
            raise ValueError(f"DTMF digits must be some of {DTMF_EVENTS!r}, got {digits!r}")
        ticks = max(1, round(duration / PTIME))
        for digit in digits.upper():
            code = DTMF_EVENTS.index(digit)
            self._queue.extend((code, (i + 1) * SAMPLES, False, i == 0) for i in range(ticks))
            self._queue.extend((code, ticks * SAMPLES, True, False) for _ in range(3))
            self._queue.extend([None] * round(pause / PTIME))
        done = asyncio.get_running_loop().create_future()
        self._queue.append(done)
        await done

    def rate(self, window: float = 1.0) -> RtpRate:
        """Packets, bytes and audible packets received per second over the last ``window``."""
        since = asyncio.get_running_loop().time() - window
        recent = [(n, audible) for t, n, audible in self._arrivals if t >= since]
        return RtpRate(
            packets=len(recent) / window,
            bytes=sum(n for n, _ in recent) / window,
            audible=sum(1 for _, audible in recent if audible) / window,
        )

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for item in self._queue:
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_exception(ConnectionError("the call ended before the DTMF was sent"))
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()

    # --- sending

    def _packet(self, pt: int, payload: bytes, timestamp: int, marker: bool) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack(
            "!BBHII", 0x80, pt | (0x80 if marker else 0), self._seq, timestamp, self._ssrc
        )
        return header + payload

    def _next_packet(self) -> bytes | None:
        while self._queue and isinstance(self._queue[0], asyncio.Future):
            done = self._queue.popleft()
            assert isinstance(done, asyncio.Future)
            if not done.done():
                done.set_result(None)
        item = self._queue.popleft() if self._queue else None
        if isinstance(item, tuple):
            code, duration, end, first = item
            if first:
                self._event_ts = self._ts
            event = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
            assert self._event_pt is not None
            return self._packet(self._event_pt, event, self._event_ts, marker=first)
        if self.audio is None or self.payload_type not in _DECODE:
            return None
        first_audio = self.tx_packets == 0
        payload = G711_FRAMES[(self.payload_type, self.audio)]
        return self._packet(self.payload_type, payload, self._ts, marker=first_audio)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            packet = self._next_packet()
            if packet is not None and self._transport is not None and self.remote:
                self._transport.sendto(packet, self.remote)
                self.tx_packets += 1
            self._ts = (self._ts + SAMPLES) & 0xFFFFFFFF
            next_at += PTIME
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    # --- receiving

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        pt = data[1] & 0x7F
        start = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= start + 4:  # header extension
            start += 4 + 4 * struct.unpack("!H", data[start + 2 : start + 4])[0]
        payload = data[start:]
        timestamp, ssrc = struct.unpack("!II", data[4:12])
        self.rx_packets += 1
        self.rx_bytes += len(payload)
        self.rx_payload_types[pt] += 1
        if pt in self.event_payload_types:
            self._on_event((ssrc, timestamp), payload)
            audible = False
        else:
            table = _DECODE.get(pt)
            peak = max((abs(table[b]) for b in payload), default=0) if table else 0
            audible = peak >= AUDIBLE_PEAK
            self.rx_audible += audible
        self._arrivals.append((asyncio.get_running_loop().time(), len(payload), audible))

    def _on_event(self, key: tuple[int, int], payload: bytes) -> None:
        """A key press is a new (SSRC, timestamp), or the same one again after its end."""
        if len(payload) < 4 or payload[0] >= len(DTMF_EVENTS):
            return
        end = bool(payload[1] & 0x80)
        if key != self._last_event or (self._last_event_ended and not end):
            self.digits += DTMF_EVENTS[payload[0]]
            self._last_event_ended = False
        self._last_event = key
        self._last_event_ended = self._last_event_ended or end


# ----------------------------------------------------------------------------- calls


@dataclass
class Invite:
    """An initial INVITE an endpoint received."""

    request_uri: str
    from_header: str
    to_header: str
    call_id: str
    headers: list[tuple[str, str]]
    source: Addr
    offered_codecs: list[str]  # from the SDP offer (rtpmap and static payload types)
    chosen_codec: str | None = None  # what the endpoint answered with

    @property
    def user(self) -> str:
        return uri_user(self.request_uri)

    def header(self, name: str) -> str | None:
        return SipMessage("", self.headers).get(name)


@dataclass(eq=False)
class Call:
    """One dialog, placed (``SipCaller.dial``) or received (``SipEndpoint.wait_invite``)."""

    agent: _UserAgent = field(repr=False)
    call_id: str
    incoming: bool
    local: str  # our From (placed) / To (received) header value, with our tag
    remote: str  # the far end's header value, with its tag once known
    rtp: RtpSession = field(repr=False)
    remote_target: str = ""  # the far end's Contact URI
    route_set: list[str] = field(default_factory=list)
    invite: Invite | None = None  # received calls: the INVITE
    local_sdp: Sdp | None = None
    remote_sdp: Sdp | None = None
    statuses: list[int] = field(default_factory=list)  # INVITE responses, sent or received
    status: int | None = None  # the INVITE's final status
    end_reason: EndReason | None = None
    requests: list[SipMessage] = field(default_factory=list)  # in-dialog requests received
    _cseq: int = 0
    _request: SipMessage | None = field(default=None, repr=False)  # the INVITE (last sent)
    _request_dest: Addr = ("", 0)
    _source: Addr = ("", 0)  # received calls: where the INVITE came from
    _retransmit: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def answered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def local_tag(self) -> str:
        return tag_of(self.local) or ""

    async def wait_final(self, timeout: float = 10.0) -> int:
        """The INVITE's final status (200 answered, 486 busy, 487 cancelled, ...)."""
        await wait_until(lambda: self.status is not None, timeout)
        assert self.status is not None
        return self.status

    async def wait_status(self, status: int, timeout: float = 10.0) -> None:
        """Until the INVITE got (placed) or was answered (received) ``status``, e.g. 180."""
        await wait_until(lambda: status in self.statuses, timeout)

    async def wait_ended(self, timeout: float = 10.0) -> EndReason:
        await wait_until(lambda: self.end_reason is not None, timeout)
        assert self.end_reason is not None
        return self.end_reason

    async def send_dtmf(self, digits: str, duration: float = 0.1, pause: float = 0.1) -> None:
        await self.rtp.send_dtmf(digits, duration, pause)

    async def bye(self, timeout: float = 5.0) -> int:
        """Hang up an answered call; the status the far end answered the BYE with (408: none)."""
        if self.end_reason is not None or not self.answered:
            raise RuntimeError(f"cannot hang up: status {self.status}, ended {self.end_reason}")
        self._end("local_bye")
        try:
            return (await self.request("BYE", timeout=timeout)).status
        except TimeoutError:
            return 408

    async def request(
        self,
        method: str,
        *headers: tuple[str, str],
        body: str = "",
        timeout: float = 5.0,
    ) -> SipMessage:
        """Send a request inside the dialog (INFO, OPTIONS, a re-INVITE with an SDP ``body``
        and its Content-Type in ``headers``...); its final response (a 2xx to a re-INVITE is
        ACKed). TimeoutError when none comes."""
        if method == "INVITE":
            headers = (("Contact", self.agent.contact), *headers)
        data, dest, branch = self._in_dialog(method, headers=headers, body=body)
        response = await self.agent._transaction(data, dest, branch, method, timeout)
        if method == "INVITE" and response.status < 300:
            ack, dest, _ = self._in_dialog("ACK", cseq=response.cseq[0])
            self.agent._send(ack, dest)
        return response

    async def cancel(self, timeout: float = 5.0) -> int:
        """CANCEL a placed call that rings; the INVITE's final status (487 when cancelled in
        time; 200 if the answer crossed the CANCEL: then the call is up and needs bye())."""
        invite = self._request
        if self.incoming or invite is None or self.status is not None:
            raise RuntimeError("only a placed call that is not answered yet can be cancelled")
        headers = [
            ("Via", invite.get("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", self.local),
            ("To", invite.get("To") or ""),
            ("Call-ID", self.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        data = build(f"CANCEL {invite.ruri} SIP/2.0", headers)
        await self.agent._transaction(data, self._request_dest, invite.branch, "CANCEL", timeout)
        return await self.wait_final(timeout)

    # --- plumbing

    def _end(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            log.debug("%s ended: %s", self.call_id, reason)
        self.rtp.close()

    def _in_dialog(
        self,
        method: str,
        cseq: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: str = "",
    ) -> tuple[bytes, Addr, str]:
        """A request inside the dialog along its route set (RFC 3261 12.2.1.1): the bytes,
        where to send them, its branch."""
        if cseq is None:
            self._cseq += 1
        ruri, routes = self.remote_target, self.route_set
        if routes and ";lr" not in uri_of(routes[0]):  # strict router
            ruri, routes = uri_of(routes[0]), [*routes[1:], f"<{self.remote_target}>"]
        hop = uri_of(self.route_set[0]) if self.route_set else self.remote_target
        branch = new_branch()
        lines = [
            ("Via", f"SIP/2.0/UDP {self.agent.host}:{self.agent.port};branch={branch};rport"),
            *(("Route", r) for r in routes),
            ("Max-Forwards", "70"),
            ("From", self.local),
            ("To", self.remote),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq or self._cseq} {method}"),
            *headers,
        ]
        return build(f"{method} {ruri} SIP/2.0", lines, body), uri_host_port(hop), branch

    def _start_media(self, remote: SipMessage) -> None:
        sdp = Sdp.parse(remote.body) if remote.body else None
        if sdp is None or self.local_sdp is None:
            return
        self.remote_sdp = sdp
        try:
            self.rtp.start(self.local_sdp, sdp)
        except ValueError as e:
            log.warning("%s: no media: %s", self.call_id, e)

    def _send_final(
        self, status: int, reason: str, *extra: tuple[str, str], body: str = ""
    ) -> None:
        """Received calls: the INVITE's final response, resent until the ACK (RFC 3261 17.2.1)."""
        assert self._request is not None
        data = self.agent._reply(
            self._request, self._source, status, reason, *extra, to_tag=self.local_tag, body=body
        )
        self.status = status
        self.statuses.append(status)
        self._retransmit = self.agent._spawn(self.agent._resend(data, self._source))

    def _on_request(self, msg: SipMessage, addr: Addr) -> None:
        """A request of this dialog from the far end (or the CANCEL of its INVITE)."""
        self.requests.append(msg)
        agent = self.agent
        if msg.method == "ACK":
            if self._retransmit is not None:
                self._retransmit.cancel()
            if not self.rtp.started and self.answered:  # late offer: the answer is in the ACK
                self._start_media(msg)
        elif msg.method == "CANCEL":
            agent._reply(msg, addr, 200, "OK")
            if self.status is None:
                self._send_final(487, "Request Terminated")
                self._end("cancelled")
        elif msg.method == "BYE":
            agent._reply(msg, addr, 200, "OK")
            self._end("remote_bye")
        elif msg.method == "INVITE":  # re-INVITE (hold, media change): same SDP again
            offer = Sdp.parse(msg.body) if msg.body else None
            if offer is not None:
                self.remote_sdp = offer
                self.rtp.remote = (offer.ip, offer.port)
            body = self.local_sdp.render() if self.local_sdp else ""
            content = [("Content-Type", "application/sdp")] if body else []
            agent._reply(msg, addr, 200, "OK", ("Contact", agent.contact), *content, body=body)
        else:  # OPTIONS, INFO, UPDATE, NOTIFY...
            agent._reply(msg, addr, 200, "OK")


# ----------------------------------------------------------------------------- agents


class _UserAgent(asyncio.DatagramProtocol):
    """The SIP socket and transaction plumbing shared by SipEndpoint and SipCaller."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.calls: list[Call] = []
        self.trace: list[str] = []  # "-> INVITE sip:..." / "<- SIP/2.0 200 OK": what went by
        self.errors: list[BaseException] = []  # failures of background work
        self._transport: asyncio.DatagramTransport | None = None
        self._by_call_id: dict[str, Call] = {}
        self._responses: dict[tuple[str, str], asyncio.Queue[SipMessage]] = {}
        self._responded: set[tuple[str, str]] = set()  # our requests that got a response
        self._answered: dict[tuple[str, str], bytes] = {}  # (branch, method) -> last response
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for call in self.calls:
            call.rtp.close()
        if self._transport is not None:
            self._transport.close()

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.port}"

    @property
    def contact(self) -> str:
        return f"<{self.uri}>"

    # --- I/O

    def _send(self, data: bytes, addr: Addr) -> None:
        assert self._transport is not None, "start() the agent first"
        self.trace.append("-> " + data.split(b"\r\n", 1)[0].decode())
        self._transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        msg = parse_sip(data)
        if msg is None:
            return
        self.trace.append("<- " + msg.first_line)
        if msg.is_response:
            key = (msg.branch, msg.cseq[1])
            self._responded.add(key)
            if key in self._responses:
                self._responses[key].put_nowait(msg)
            return
        answered = self._answered.get((msg.branch, msg.method))
        if answered is not None and msg.method != "ACK":  # a retransmission: answer it again
            self._send(answered, addr)
            return
        call = self._by_call_id.get(msg.call_id)
        if msg.method == "INVITE" and call is None and tag_of(msg.get("To") or "") is None:
            self._on_invite(msg, addr)
        elif call is not None:
            call._on_request(msg, addr)
        elif msg.method == "OPTIONS":
            self._reply(msg, addr, 200, "OK", ("Accept", "application/sdp"))
        elif msg.method != "ACK":
            self._reply(msg, addr, 481, "Call/Transaction Does Not Exist")

    def _on_invite(self, msg: SipMessage, addr: Addr) -> None:
        self._reply(msg, addr, 405, "Method Not Allowed")

    def _reply(
        self,
        request: SipMessage,
        addr: Addr,
        status: int,
        reason: str,
        *extra: tuple[str, str],
        to_tag: str | None = None,
        body: str = "",
    ) -> bytes:
        data = response_to(request, status, reason, *extra, to_tag=to_tag, body=body)
        self._answered[(request.branch, request.method)] = data
        self._send(data, addr)
        return data

    def _add_call(self, call: Call) -> None:
        self.calls.append(call)
        self._by_call_id[call.call_id] = call

    # --- transactions (UDP: resend until answered)

    def _request(
        self, data: bytes, dest: Addr, branch: str, method: str
    ) -> asyncio.Queue[SipMessage]:
        """Send a request, resent (timers A/E) until its first response; the responses."""
        key = (branch, method)
        queue: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._responses[key] = queue
        self._send(data, dest)
        self._spawn(self._resend(data, dest, until=lambda: key in self._responded))
        return queue

    async def _resend(
        self, data: bytes, dest: Addr, until: Callable[[], bool] = lambda: False
    ) -> None:
        interval = T1
        for _ in range(7):
            await asyncio.sleep(interval)
            if until():
                return
            self._send(data, dest)
            interval = min(interval * 2, 4.0)

    async def _transaction(
        self, data: bytes, dest: Addr, branch: str, method: str, timeout: float
    ) -> SipMessage:
        """A non-INVITE request's final response."""
        queue = self._request(data, dest, branch, method)
        async with asyncio.timeout(timeout):
            while (response := await queue.get()).status < 200:
                pass
        return response

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("sip_ua background task failed: %r", error)
            self.errors.append(error)


class SipEndpoint(_UserAgent):
    """A UAS: answers every INVITE by ``policy`` (a value, or a function of the Invite):

    * "answer": 180 Ringing when ``ring_delay`` > 0, then 200 with an SDP answer choosing the
      first offered codec in ``accept`` (488 when none is);
    * "busy": 486; "reject": 503;
    * "no_answer": 180, then nothing until the caller's CANCEL (200, then 487).

    Answered calls send ``audio`` ("tone", "silence" or None: no RTP) to the offered address.
    Attributes may be changed between calls; ``invites`` records every INVITE received.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = "endpoint",
        policy: Policy | Callable[[Invite], Policy] = "answer",
        ring_delay: float = 0.0,
        accept: Sequence[str] = LIVEKIT_CODECS,
        audio: Audio | None = None,
    ) -> None:
        super().__init__(host, port, user)
        self.policy = policy
        self.ring_delay = ring_delay
        self.accept = accept
        self.audio = audio
        self.invites: list[Invite] = []
        self._new_calls: asyncio.Queue[Call] = asyncio.Queue()

    async def wait_invite(self, timeout: float = 10.0) -> Call:
        """The next call received (in arrival order, each returned once)."""
        async with asyncio.timeout(timeout):
            return await self._new_calls.get()

    def _on_invite(self, msg: SipMessage, addr: Addr) -> None:
        offer = Sdp.parse(msg.body) if msg.body else None
        invite = Invite(
            msg.ruri,
            msg.get("From") or "",
            msg.get("To") or "",
            msg.call_id,
            msg.headers,
            addr,
            offer.codecs if offer else [],
        )
        call = Call(
            agent=self,
            call_id=msg.call_id,
            incoming=True,
            local=f"{msg.get('To')};tag={new_tag()}",
            remote=msg.get("From") or "",
            rtp=RtpSession(self.host, self.audio),
            remote_target=uri_of(msg.get("Contact") or ""),
            route_set=msg.get_all("Record-Route"),
            invite=invite,
            remote_sdp=offer,
            _request=msg,
            _source=addr,
        )
        self.invites.append(invite)
        self._add_call(call)
        self._new_calls.put_nowait(call)
        self._reply(msg, addr, 100, "Trying")
        self._spawn(self._answer(call, offer))

    async def _answer(self, call: Call, offer: Sdp | None) -> None:
        assert call.invite is not None and call._request is not None
        policy = self.policy(call.invite) if callable(self.policy) else self.policy
        if policy in ("busy", "reject"):
            status, reason = (486, "Busy Here") if policy == "busy" else (503, "Unavailable")
            call._send_final(status, reason)
            call._end("rejected")
            return
        await call.rtp.open()
        if offer is None:  # late offer: ours goes in the 200, the answer comes in the ACK
            call.local_sdp = Sdp.offer(self.host, call.rtp.port, self.accept)
        else:
            call.local_sdp = offer.answer(self.accept, self.host, call.rtp.port)
        if call.local_sdp is None:
            call._send_final(488, "Not Acceptable Here")
            call._end("rejected")
            return
        call.invite.chosen_codec = call.local_sdp.codecs[0]
        if policy == "no_answer" or self.ring_delay > 0:
            self._reply(call._request, call._source, 180, "Ringing", to_tag=call.local_tag)
            call.statuses.append(180)
        if policy == "no_answer":
            return
        await asyncio.sleep(self.ring_delay)
        if call.end_reason is not None:  # cancelled while ringing
            return
        call._send_final(
            200,
            "OK",
            ("Contact", self.contact),
            ("Content-Type", "application/sdp"),
            body=call.local_sdp.render(),
        )
        if offer is not None:
            call._start_media(call._request)


class SipCaller(_UserAgent):
    """A UAC placing calls (``dial``) from ``user``@host:port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, user: str = "caller") -> None:
        super().__init__(host, port, user)

    async def dial(
        self,
        target: str,
        *,
        codecs: Sequence[str] = ("PCMU",),
        audio: Audio | None = "tone",
        auth: tuple[str, str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Call:
        """Send an INVITE to ``target`` (e.g. ``sip:9999@127.0.0.1:5060``) offering ``codecs``
        + telephone-event/8000 (pt 101); returns the Call at once (``wait_final`` for the
        outcome). Answered, it sends ``audio`` ("tone", "silence", None: no RTP at all).
        ``auth`` (user, password) answers a 401/407 challenge once."""
        rtp = RtpSession(self.host, audio)
        await rtp.open()
        call = Call(
            agent=self,
            call_id=uuid.uuid4().hex,
            incoming=False,
            local=f"<{self.uri}>;tag={new_tag()}",
            remote=f"<{target}>",
            rtp=rtp,
            remote_target=target,
            local_sdp=Sdp.offer(self.host, rtp.port, codecs),
            _request_dest=uri_host_port(target),
        )
        self._add_call(call)
        responses = self._invite(call, list(headers))
        self._spawn(self._follow_invite(call, responses, list(headers), auth))
        return call

    def _invite(self, call: Call, headers: list[tuple[str, str]]) -> asyncio.Queue[SipMessage]:
        assert call.local_sdp is not None
        call._cseq += 1
        branch = new_branch()
        invite = SipMessage(
            f"INVITE {call.remote_target} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport"),
                ("Max-Forwards", "70"),
                ("From", call.local),
                ("To", call.remote),
                ("Call-ID", call.call_id),
                ("CSeq", f"{call._cseq} INVITE"),
                ("Contact", self.contact),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"),
                *headers,
                ("Content-Type", "application/sdp"),
            ],
            call.local_sdp.render(),
        )
        call._request = invite
        return self._request(invite.encode(), call._request_dest, branch, "INVITE")

    async def _follow_invite(
        self,
        call: Call,
        responses: asyncio.Queue[SipMessage],
        headers: list[tuple[str, str]],
        auth: tuple[str, str] | None,
    ) -> None:
        """The INVITE's responses: provisional, 2xx (ACK, dialog, media), challenge (retry
        once with credentials), failure (ACK, end). Retransmitted finals are ACKed again."""
        while True:
            response = await responses.get()
            status = response.status
            if status < 200:
                call.statuses.append(status)
                continue
            if call.status is not None and status == call.status:  # retransmitted final
                self._ack(call, response)
                continue
            call.statuses.append(status)
            if status < 300:
                call.remote = response.get("To") or call.remote
                call.remote_target = uri_of(response.get("Contact") or call.remote_target)
                call.route_set = list(reversed(response.get_all("Record-Route")))
                call.status = status
                self._ack(call, response)
                call._start_media(response)
                continue
            self._ack(call, response)
            challenge = response.get("WWW-Authenticate") or response.get("Proxy-Authenticate")
            if status in (401, 407) and auth and challenge and call._cseq == 1:
                name = "Authorization" if status == 401 else "Proxy-Authorization"
                credentials = digest_authorization(
                    challenge, "INVITE", call.remote_target, auth[0], auth[1]
                )
                responses = self._invite(call, [*headers, (name, credentials)])
                continue
            call.status = status
            call._end("cancelled" if status == 487 else "rejected")

    def _ack(self, call: Call, response: SipMessage) -> None:
        """ACK a final response: a new transaction along the dialog for a 2xx, hop by hop
        (the INVITE's Via and destination) for a failure."""
        invite = call._request
        assert invite is not None
        if response.status < 300:
            data, dest, _ = call._in_dialog("ACK", cseq=invite.cseq[0])
            self._send(data, dest)
            return
        headers = [
            ("Via", invite.get("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", call.local),
            ("To", response.get("To") or ""),
            ("Call-ID", call.call_id),
            ("CSeq", f"{invite.cseq[0]} ACK"),
        ]
        self._send(build(f"ACK {invite.ruri} SIP/2.0", headers), call._request_dest)
