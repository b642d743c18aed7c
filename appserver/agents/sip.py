"""Where an engine sends a caller so they land in their call's LiveKit room.

Each call to a browser agent gets its own room, :func:`room_name` of the call id. The
engine bridges the caller to LiveKit SIP with the room name as the user part of the
request URI; the dispatch rule in ``livekit/sip-dispatch-rule.json`` (``dispatchRuleCallee``,
no prefix, no randomisation, only for the engines' trunk) puts the caller into exactly that
room. So the engine's dial string is a pure function of the call id and the LiveKit SIP
address in ``CALLYARD_LIVEKIT_SIP_URI``:

>>> sip_address("7f3a-11", "sip:livekit-sip:5060")
'sip:call-7f3a-11@livekit-sip:5060'

Workers send that address as ``Dial(kind="sip")`` (:mod:`appserver.agents.bridge`); each
driver formats it with its SIP template, e.g. ``CALLYARD_ASTERISK_SIP_TEMPLATE=
"PJSIP/kamailio/{target}"`` or ``CALLYARD_FREESWITCH_SIP_TEMPLATE="sofia/callyard/{target}"``.
"""

from __future__ import annotations

import re

ROOM_PREFIX = "call-"
SUPERVISOR_ROOM_PREFIX = "supervise-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def room_name(call_id: str) -> str:
    """The LiveKit room of a call: ``call-`` and the call id (characters outside
    ``A-Za-z0-9_.-`` become ``_``, so the name is also a valid SIP user part)."""
    if not call_id or len(call_id) > 200:
        raise ValueError(f"call id must be 1-200 characters, got {call_id!r}")
    return ROOM_PREFIX + _UNSAFE.sub("_", call_id)


def supervisor_room(call_id: str) -> str:
    """The LiveKit room a supervisor of ``call_id`` is in (one supervisor per call at a
    time): ``supervise-`` and the call id, made safe as in :func:`room_name`."""
    return SUPERVISOR_ROOM_PREFIX + room_name(call_id).removeprefix(ROOM_PREFIX)


def sip_host(sip_uri: str) -> str:
    """``host[:port]`` of a ``sip:host[:port]`` URI (parameters after ``;`` are dropped)."""
    scheme, sep, rest = sip_uri.partition(":")
    host = rest.split(";", 1)[0]
    if scheme not in ("sip", "sips") or not sep or not host or "@" in host:
        raise ValueError(f"expected sip:host[:port], got {sip_uri!r}")
    return host


def sip_address(call_id: str, sip_uri: str) -> str:
    """The SIP URI that puts a caller into the room of ``call_id``."""
    return room_address(room_name(call_id), sip_uri)


def room_address(room: str, sip_uri: str) -> str:
    """The SIP URI of LiveKit room ``room`` (a name from :func:`room_name` or
    :func:`supervisor_room`)."""
    scheme = sip_uri.partition(":")[0]
    return f"{scheme}:{room}@{sip_host(sip_uri)}"
