"""A simulated FreeSWITCH channel: its variables, state and the events it emits.

Event headers follow the order and naming of FreeSWITCH 1.10.12 (core headers, channel
headers, ``Caller-*`` profile, ``variable_*``, then event-specific headers).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from appserver.devkit.sim.esl.server_codec import json_pairs, plain_pairs, url_encode

Pairs = list[tuple[str, str]]

CORE_UUID = str(uuidlib.uuid4())
HOSTNAME = "callyard-sim"

# Events that ``myevents`` subscribes a socket to (mod_event_socket.c, the "myevents"
# command of 1.10: it adds these 23 to what the socket has, and from then on only events
# whose Unique-ID is its channel's reach it).
MYEVENTS = frozenset(
    {
        "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE",
        "CHANNEL_DATA", "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
        "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK", "DETECTED_SPEECH", "DTMF",
        "NOTALK", "TALK",
    }
)  # fmt: skip


class Subscription:
    """The event types a socket hears, as mod_event_socket keeps them: ``event ALL`` is
    every type; ``nixevent X`` after it every type but X; ``nixevent ALL`` none."""

    def __init__(self) -> None:
        self.every = False
        self.names: set[str] = set()
        self.nixed: set[str] = set()  # when ``every``: the types taken out since

    def add(self, names: list[str]) -> None:
        if "ALL" in names:
            self.every, self.nixed = True, set()
        self.names |= set(names) - {"ALL"}
        self.nixed -= set(names)

    def remove(self, names: list[str]) -> None:
        if "ALL" in names:
            self.clear()
            return
        self.names -= set(names)
        if self.every:
            self.nixed |= set(names)

    def clear(self) -> None:
        self.every, self.names, self.nixed = False, set(), set()

    def hears(self, name: str) -> bool:
        return name in self.names or (self.every and name not in self.nixed)

class Filters:
    """A socket's ``filter`` lines as mod_event_socket applies them (event_handler): with
    none every event passes; with some, an event passes when one of its headers has one of
    their values (names and values compared case-blind). Not modelled: ``-`` (deny) and
    ``/regex`` values."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._wanted: frozenset[tuple[str, str]] = frozenset()  # the lines lowered

    def command(self, arg: str) -> str:
        """Carry out ``filter <arg>``; the reply text, as 1.10.12 words it."""
        header, _, value = arg.strip().partition(" ")
        if header.lower() == "delete" and value:
            header, _, value = value.partition(" ")
            if header.lower() == "all":
                self._set([])
            else:
                self._set([(h, v) for h, v in self.lines if h.lower() != header.lower()
                           or (value and v.lower() != value.lower())])
            return f"+OK filter deleted. [{header}][{value}]"
        if header.lower() == "add":
            header, _, value = value.partition(" ")
        if not header or not value:
            return "-ERR invalid syntax"
        self._set([*self.lines, (header, value)])
        return f"+OK filter added. [{header}]=[{value}]"

    def _set(self, lines: list[tuple[str, str]]) -> None:
        self.lines = lines
        self._wanted = frozenset((h.lower(), v.lower()) for h, v in lines)

    def passes(self, pairs: Pairs) -> bool:
        wanted = self._wanted
        return not wanted or any((h.lower(), v.lower()) in wanted for h, v in pairs)

    def only_channel(self, uuid: str) -> bool:
        """Whether no event of another channel can pass: every line is ``Unique-ID <uuid>``."""
        return bool(self.lines) and all(h.lower() == "unique-id" and v.lower() == uuid.lower()
                                        for h, v in self.lines)


_sequence = 0


def next_sequence() -> str:
    global _sequence
    _sequence += 1
    return str(_sequence)


_dates: tuple[int, str, str] = (-1, "", "")  # the last second's Event-Date-* values


def _event_dates(now: float) -> tuple[str, str]:
    """Event-Date-Local and -GMT, formatted once a second (every event of it shares them)."""
    global _dates
    second = int(now)
    if _dates[0] != second:
        local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        gmt = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second))
        _dates = (second, local, gmt)
    return _dates[1], _dates[2]


def core_headers(event_name: str, calling: tuple[str, str, int],
                 hostname: str = HOSTNAME) -> Pairs:
    now = time.time()
    local, gmt = _event_dates(now)
    return [
        ("Event-Name", event_name),
        ("Core-UUID", CORE_UUID),
        ("FreeSWITCH-Hostname", hostname),
        ("FreeSWITCH-Switchname", hostname),
        ("FreeSWITCH-IPv4", "127.0.0.1"),
        ("FreeSWITCH-IPv6", "::1"),
        ("Event-Date-Local", local),
        ("Event-Date-GMT", gmt),
        ("Event-Date-Timestamp", str(int(now * 1_000_000))),
        ("Event-Calling-File", calling[0]),
        ("Event-Calling-Function", calling[1]),
        ("Event-Calling-Line-Number", str(calling[2])),
        ("Event-Sequence", next_sequence()),
    ]


_CALLING = {
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", 2021),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1183),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2944),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2984),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3929),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3445),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2423),
    "CHANNEL_HANGUP_COMPLETE": (
        "switch_core_state_machine.c", "switch_core_session_reporting_state", 1048
    ),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 677),
    "CHANNEL_BRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1686),
    "CHANNEL_UNBRIDGE": ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1760),
}  # fmt: skip


class Variables(dict[str, str]):
    """Channel variables that keep their encoded ``variable_*`` event block (per format)
    until one of them changes: most events carry them all, few change them."""

    __slots__ = ("encoded",)

    def __init__(self, *args: Any, **kwargs: str) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: dict[str, str] = {}

    def block(self, fmt: str) -> str:
        text = self.encoded.get(fmt)
        if text is None:
            pairs = [(f"variable_{k}", v) for k, v in self.items()]
            text = self.encoded[fmt] = json_pairs(pairs) if fmt == "json" else plain_pairs(pairs)
        return text

    def __setitem__(self, key: str, value: str) -> None:
        self.encoded.clear()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.encoded.clear()
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.encoded.clear()
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, str]:
        self.encoded.clear()
        return super().popitem()

    def setdefault(self, key: str, default: str = "") -> str:
        self.encoded.clear()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: str) -> None:
        self.encoded.clear()
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self.encoded.clear()
        super().clear()

    def __ior__(self, other: Any) -> Variables:  # type: ignore[override,misc]
        self.update(other)
        return self


@dataclass
class SimChannel:
    """One call leg inside the simulated switch."""

    caller: str
    called: str
    caller_name: str = ""
    context: str = "default"
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    variables: Variables = field(default_factory=Variables)
    state: str = "CS_EXECUTE"
    call_state: str = "RINGING"
    answer_state: str = "ringing"
    hangup_cause: str = ""
    created_us: int = field(default_factory=lambda: int(time.time() * 1_000_000))
    answered_us: int = 0
    hangup_us: int = 0
    direction: str = "inbound"  # "outbound" for a leg the switch originated (bridge's B-leg)
    name: str = ""
    # the bridged party's profile: events then carry Other-Type / Other-Leg-* like real ones
    other: SimChannel | None = None
    hostname: str = HOSTNAME  # the switch's (FreeSWITCH-Hostname of its events)

    def __post_init__(self) -> None:
        self.name = self.name or f"sofia/callyard/{self.caller}@callyard-sim"
        base = {
            "direction": self.direction,
            "uuid": self.uuid,
            "session_id": "1",
            "channel_name": self.name,
            "read_codec": "PCMU",
            "read_rate": "8000",
            "write_codec": "PCMU",
            "write_rate": "8000",
            "call_uuid": self.uuid,
        }
        self.variables = Variables({**base, **self.variables})
        self._encoded_channel: tuple[tuple[object, ...], str, str] = ((), "", "")

    @property
    def alive(self) -> bool:
        return not self.hangup_cause

    def _state_number(self) -> str:
        return {"CS_EXECUTE": "4", "CS_HANGUP": "10", "CS_REPORTING": "11"}.get(self.state, "4")

    def channel_headers(self) -> Pairs:
        profile = self._profile("Caller")
        pairs: Pairs = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", self._state_number()),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
        ]
        if self.hangup_cause:
            pairs.append(("Hangup-Cause", self.hangup_cause))
        pairs += [
            ("Channel-Read-Codec-Name", "PCMU"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Read-Codec-Bit-Rate", "64000"),
            ("Channel-Write-Codec-Name", "PCMU"),
            ("Channel-Write-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Bit-Rate", "64000"),
        ]
        pairs += profile
        if self.other is not None:  # switch_channel_event_set_data: the originatee's profile
            pairs.append(("Other-Type", "originatee"))
            pairs += self.other._profile("Other-Leg")
        return pairs

    def _profile(self, prefix: str) -> Pairs:
        p = prefix
        return [
            (f"{p}-Direction", self.direction),
            (f"{p}-Logical-Direction", self.direction),
            (f"{p}-Dialplan", "XML"),
            (f"{p}-Caller-ID-Name", self.caller_name or self.caller),
            (f"{p}-Caller-ID-Number", self.caller),
            (f"{p}-Orig-Caller-ID-Name", self.caller_name or self.caller),
            (f"{p}-Orig-Caller-ID-Number", self.caller),
            (f"{p}-Destination-Number", self.called),
            (f"{p}-Unique-ID", self.uuid),
            (f"{p}-Source", "mod_sofia"),
            (f"{p}-Context", self.context),
            (f"{p}-Channel-Name", self.name),
            (f"{p}-Profile-Index", "1"),
            (f"{p}-Profile-Created-Time", str(self.created_us)),
            (f"{p}-Channel-Created-Time", str(self.created_us)),
            (f"{p}-Channel-Answered-Time", str(self.answered_us)),
            (f"{p}-Channel-Hangup-Time", str(self.hangup_us)),
            (f"{p}-Screen-Bit", "true"),
            (f"{p}-Privacy-Hide-Name", "false"),
            (f"{p}-Privacy-Hide-Number", "false"),
        ]

    def variable_headers(self) -> Pairs:
        return [(f"variable_{k}", v) for k, v in self.variables.items()]

    def channel_data(self) -> Pairs:
        """The ``connect`` reply's headers before Content-Type (CHANNEL_DATA)."""
        chan = [(f"Channel-{k.split('-', 1)[1]}", v) for k, v in self._profile("Caller")]
        return (
            core_headers("CHANNEL_DATA", _CALLING["CHANNEL_DATA"], self.hostname)
            + chan
            + self.channel_headers()
            + self.variable_headers()
        )

    def _channel_key(self) -> tuple[object, ...]:
        """Everything :meth:`channel_headers` reads, to know when its encoding is stale."""
        key = (self.state, self.call_state, self.answer_state, self.hangup_cause,
               *self._profile_key())
        return key if self.other is None else key + self.other._profile_key()

    def _profile_key(self) -> tuple[object, ...]:
        return (self.name, self.uuid, self.direction, self.caller, self.caller_name,
                self.called, self.context, self.created_us, self.answered_us, self.hangup_us)

    def _channel_block(self, fmt: str) -> str:
        """:meth:`channel_headers` encoded, kept until the state or a profile field changes."""
        key = self._channel_key()
        cached_key, plain, json_text = self._encoded_channel
        if cached_key != key:
            pairs = self.channel_headers()
            plain, json_text = plain_pairs(pairs), json_pairs(pairs)
            self._encoded_channel = (key, plain, json_text)
        return json_text if fmt == "json" else plain

    def event_frame(
        self,
        name: str,
        fmt: str,
        extra: Iterable[tuple[str, str]] = (),
        with_variables: bool = True,
        lead: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """``server_codec.event_frame(self.event_pairs(...), fmt=fmt)``, byte for byte, from
        the channel's cached encodings (the cost of a simulated call is mostly its events)."""
        calling = _CALLING.get(name, ("switch_channel.c", "switch_channel_event", 1))
        head = core_headers(name, calling, self.hostname) + list(lead)
        tail = list(extra)
        if fmt == "json":
            parts = [json_pairs(head), self._channel_block(fmt)]
            if with_variables and self.variables:
                parts.append(self.variables.block(fmt))
            if tail:
                parts.append(json_pairs(tail))
            payload = ("{" + ",".join(parts) + "}").encode("utf-8")
            ctype = "text/event-json"
        else:
            text = plain_pairs(head) + self._channel_block(fmt)
            if with_variables:
                text += self.variables.block(fmt)
            payload = (text + plain_pairs(tail) + "\n").encode("utf-8")
            ctype = "text/event-plain"
        return f"Content-Length: {len(payload)}\nContent-Type: {ctype}\n\n".encode() + payload

    def event_pairs(
        self,
        name: str,
        extra: Iterable[tuple[str, str]] = (),
        with_variables: bool = True,
        lead: Iterable[tuple[str, str]] = (),
    ) -> Pairs:
        """The event's headers; ``lead`` goes before the channel data (as FreeSWITCH adds
        ``Bridge-A-Unique-ID`` / ``Bridge-B-Unique-ID``), ``extra`` after the variables."""
        calling = _CALLING.get(name, ("switch_channel.c", "switch_channel_event", 1))
        pairs = core_headers(name, calling, self.hostname) + list(lead) \
            + self.channel_headers()
        if with_variables:
            pairs += self.variable_headers()
        pairs.extend(extra)
        return pairs


def encode_connect_reply(pairs: Pairs) -> bytes:
    """The outbound ``connect`` reply: channel data as URL-encoded headers, then the reply."""
    text = "".join(f"{k}: {url_encode(v)}\n" for k, v in pairs)
    text += "Content-Type: command/reply\nReply-Text: %2BOK%0A\n"
    text += "Socket-Mode: async\nControl: full\n\n"
    return text.encode("utf-8")
