"""Who hears a supervisor on the simulated Asterisk, from the channels and bridges.

A snoop channel (``POST /channels/{id}/snoop``) on channel X hears X's audio (``spy``) and
mixes what it is sent into X's audio (``whisper``; res_stasis_snoop.c): ``out`` is what X
hears, ``in`` what X says, so X's bridge partners hear it. A leg bridged with a snoop is
heard through it; a leg bridged with the call's own channels is heard by all of them.
"""

from __future__ import annotations

from appserver.devkit.sim.ari.models import SimBridge, SimChannel

DIRECTIONS = ("none", "both", "out", "in")


def _members(bridge: SimBridge, channels: dict[str, SimChannel], but: str) -> list[SimChannel]:
    return [channels[c] for c in bridge.channels if c in channels and c != but]


def hearers(leg: SimChannel, channels: dict[str, SimChannel],
            bridges: dict[str, SimBridge]) -> list[SimChannel]:
    """The channels that hear ``leg`` (in a bridge), through snoops or directly."""
    bridge = bridges.get(leg.bridge_id or "")
    if bridge is None:
        return []
    heard: list[SimChannel] = []
    for other in _members(bridge, channels, leg.id):
        if other.snoop is None:
            heard.append(other)
            continue
        target = channels.get(other.snoop.target)
        whisper = other.snoop.whisper
        if target is None:
            continue
        if whisper in ("out", "both"):
            heard.append(target)
        partners = bridges.get(target.bridge_id or "")
        if whisper in ("in", "both") and partners is not None:
            heard += _members(partners, channels, target.id)
    return heard


def heard_by(heard: list[SimChannel]) -> str:
    """Transcript wording: ``caller`` (a simulated caller), ``agent`` (any other party)."""
    who = (["caller"] if any(c.call for c in heard) else []) + (
        ["agent"] if any(not c.call for c in heard) else [])
    return ",".join(who) or "nobody"


def call_of(leg: SimChannel, channels: dict[str, SimChannel],
            bridges: dict[str, SimBridge]) -> SimChannel | None:
    """The simulated caller's channel a supervisor's leg is attached to, if any."""
    bridge = bridges.get(leg.bridge_id or "")
    for other in _members(bridge, channels, leg.id) if bridge else []:
        near = channels.get(other.snoop.target) if other.snoop else other
        if near is None:
            continue
        if near.call:
            return near
        around = bridges.get(near.bridge_id or "")
        for c in _members(around, channels, near.id) if around else []:
            if c.call:
                return c
    return None
