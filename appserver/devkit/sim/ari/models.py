"""Simulated Asterisk objects (channels, bridges, playbacks, endpoints) and their ARI JSON."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from appserver.devkit.sim.ari.call import AriSimulatedCall

Json = dict[str, Any]

# Q.850 causes Asterisk reports (cause, cause_txt as in ChannelDestroyed).
CAUSES: dict[int, tuple[str, str]] = {
    1: ("UNALLOCATED", "Unallocated (unassigned) number"),
    3: ("NO_ROUTE_DESTINATION", "No route to destination"),
    16: ("NORMAL_CLEARING", "Normal Clearing"),
    17: ("USER_BUSY", "User busy"),
    19: ("NO_ANSWER", "User alerting, no answer"),
    20: ("SUBSCRIBER_ABSENT", "Subscriber absent"),
    21: ("CALL_REJECTED", "Call Rejected"),
    34: ("NORMAL_CIRCUIT_CONGESTION", "Circuit/channel congestion"),
}
# DELETE /channels/{id}?reason=... -> cause code (as res_ari does).
HANGUP_REASONS: dict[str, int] = {
    "normal": 16,
    "busy": 17,
    "congestion": 34,
    "no_answer": 19,
    "timeout": 19,
    "rejected": 21,
    "unallocated": 1,
    "normal_unspecified": 31,
    "number_incomplete": 28,
    "codec_mismatch": 58,
    "interworking": 127,
    "failure": 38,
    "answered_elsewhere": 26,
}


_second: tuple[int, str] = (-1, "")  # the last second formatted


def timestamp(at: float | None = None) -> str:
    """Asterisk's ARI time format: ``2026-11-24T12:38:52.389+0000`` (UTC)."""
    global _second
    at = time.time() if at is None else at
    whole = int(at)
    if _second[0] != whole:  # most events of a second share its text
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    millis = int(at * 1000) % 1000
    return f"{_second[1]}.{millis:03d}+0000"


def party(endpoint: str) -> str:
    """The dialled party of an endpoint, as transcripts name it: ``PJSIP/1001`` -> ``1001``,
    ``PJSIP/1001@kamailio`` -> ``1001``, ``PJSIP/edge/sip:1001@host`` -> ``1001``."""
    resource = endpoint.partition("/")[2] or endpoint
    resource = resource.rpartition("/")[2].removeprefix("sip:")
    return resource.partition("@")[0]


def media_to_prompt(media: str) -> str:
    """``sound:ivr/welcome`` -> ``file:ivr/welcome``; ``digits:42`` / ``number:42`` unchanged;
    ``sound:silence/2`` -> ``silence:2000``."""
    scheme, _, value = media.partition(":")
    if scheme == "sound":
        if value.startswith("silence/") and value[8:].isdigit():
            return f"silence:{int(value[8:]) * 1000}"
        return f"file:{value}"
    return media


PlaybackState = Literal["queued", "playing", "continuing", "done", "failed"]


@dataclass
class SimPlayback:
    id: str
    media: list[str]
    target_uri: str
    language: str
    state: PlaybackState = "queued"
    index: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    transcribed_end: bool = False  # the caller's transcript already shows how it ended

    def to_json(self) -> Json:
        data: Json = {
            "id": self.id,
            "media_uri": self.media[min(self.index, len(self.media) - 1)],
            "target_uri": self.target_uri,
            "language": self.language,
            "state": self.state,
        }
        if self.index + 1 < len(self.media):
            data["next_media_uri"] = self.media[self.index + 1]
        return data


@dataclass
class SimRecording:
    """A LiveRecording of a channel (``POST /channels/{id}/record``)."""

    name: str
    format: str
    target_uri: str
    max_seconds: int  # 0: no limit
    terminate_on: str  # none | any | * | #
    beep: bool
    state: str = "queued"
    duration: int | None = None
    how: str = "timeout"  # what ended it: dtmf | timeout | hangup | stop
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    paused_since: float | None = None  # monotonic, while paused (nothing is written)
    paused_total: float = 0.0

    def pause(self, now: float) -> None:
        if self.paused_since is None:
            self.paused_since, self.state = now, "paused"

    def unpause(self, now: float) -> None:
        if self.paused_since is not None:
            self.paused_total += now - self.paused_since
            self.paused_since, self.state = None, "recording"

    def ends_on(self, digit: str) -> bool:
        return self.terminate_on == "any" or self.terminate_on == digit

    def to_json(self) -> Json:
        data: Json = {"name": self.name, "format": self.format, "target_uri": self.target_uri,
                      "state": self.state}
        if self.duration is not None:
            data["duration"] = self.duration
        return data


@dataclass
class SimChannel:
    id: str
    name: str
    created: float
    caller_name: str = ""
    caller_number: str = ""
    connected_name: str = ""
    connected_number: str = ""
    state: str = "Ring"
    context: str = "from-external"
    exten: str = "s"
    priority: int = 1
    app_name: str = ""
    app_data: str = ""
    language: str = "en"
    protocol_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    stasis_app: str | None = None  # the application the channel is in, if any
    subscribed_app: str | None = None  # the application that receives its events
    bridge_id: str | None = None
    held_bridge: str | None = None  # removed from this bridge while its peer stayed (hold)
    call: AriSimulatedCall | None = None  # the simulated caller behind this channel
    endpoint: str = ""  # "PJSIP/1001" for channels we originated
    originator: str | None = None
    playbacks: list[SimPlayback] = field(default_factory=list)
    player: asyncio.Task[None] | None = None
    recording: SimRecording | None = None
    hungup: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    snoop: Snoop | None = None  # a snoop channel: on which channel, in which directions
    supervising: SimChannel | None = None  # a leg heard on a caller's call: that caller

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": self.protocol_id,
            "caller": {"name": self.caller_name, "number": self.caller_number},
            "connected": {"name": self.connected_name, "number": self.connected_number},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": timestamp(self.created),
            "language": self.language,
        }


@dataclass(frozen=True, slots=True)
class Snoop:
    target: str  # the snooped channel
    spy: str  # none | both | out | in
    whisper: str


@dataclass
class SimBridge:
    id: str
    name: str
    bridge_type: str
    created: float
    channels: list[str] = field(default_factory=list)
    app: str | None = None
    moh_class: str | None = None
    held: list[str] = field(default_factory=list)  # channels removed on hold, peer stayed
    recording: SimRecording | None = None

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "technology": "simple_bridge" if self.bridge_type == "mixing" else "holding_bridge",
            "bridge_type": self.bridge_type,
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": list(self.channels),
            "creationtime": timestamp(self.created),
            "video_mode": "talker",
        }


Behaviour = Literal["answer", "busy", "no_answer", "reject"]


@dataclass
class SimEndpoint:
    """A device Asterisk can call (e.g. an agent's phone ``PJSIP/1001``)."""

    technology: str
    resource: str
    state: Literal["online", "offline"] = "online"
    behaviour: Behaviour = "answer"
    answer_after: float = 0.05  # seconds of ringing before the behaviour applies
    no_answer_after: float | None = None  # "no_answer": give up after this (None: timeout)
    talk_seconds: float = 0.3  # after answering, the far end hangs up after this long
    channel_ids: list[str] = field(default_factory=list)

    def to_json(self) -> Json:
        return {
            "technology": self.technology,
            "resource": self.resource,
            "state": self.state,
            "channel_ids": list(self.channel_ids),
        }


@dataclass
class SoundCatalog:
    """Which sounds exist and how long each plays (short by default, so tests are fast)."""

    default_seconds: float = 0.2
    durations: dict[str, float] = field(default_factory=dict)  # "sound:ivr/welcome" -> s
    missing: set[str] = field(default_factory=set)  # sound names that do not exist
    per_digit_seconds: float = 0.04

    def exists(self, media: str) -> bool:
        scheme, _, value = media.partition(":")
        if scheme == "sound":
            return value not in self.missing and bool(value)
        if scheme in ("digits", "number", "characters"):
            return bool(value)
        return scheme == "tone" and bool(value)

    def seconds(self, media: str) -> float:
        if media in self.durations:
            return self.durations[media]
        scheme, _, value = media.partition(":")
        if scheme in ("digits", "characters"):
            return self.per_digit_seconds * len(value)
        if scheme == "number":
            return self.per_digit_seconds * 2
        if scheme == "sound" and value.startswith("silence/") and value[8:].isdigit():
            return min(self.default_seconds, int(value[8:]))
        return self.default_seconds
