"""The bench walk over ONE inbound Event Socket: a yardstick for `bench_native.py --ways inbound`.

    .venv/bin/python benchmarks/fs_inbound_walk.py callyard-inbound   # prints "ready", then serves

Callyard's FreeSWITCH worker gets each call on an outbound socket of its own (the dialplan's
``socket`` application): FreeSWITCH runs a thread per socket that polls it every 20 ms for the
whole call, and offers every event to every socket. This is the other shape: the dialplan
parks the call, and one inbound connection for all calls subscribes once (filtered on the
dialplan context) and drives each call with ``sendmsg <uuid>``. It serves the same walk as the
``bench`` menu with the least a controller must do (no flow, no Redis, no CDR, no timers), so
``bench_native.py`` can measure what that shape costs the engine, and what a controller's
floor is, beside the native IVR and Callyard on the same engine in the same rounds.

Walk: on the call's CHANNEL_PARK, ``answer`` and the greeting (one ``file_string``
playback); on the digit 1 during it, ``uuid_break`` it, the goodbye, then ``hangup`` queued
behind it (as Callyard's worker does). Anything else (``#``, a digit after the greeting) is
ignored; a call whose digit never comes waits for its caller to hang up.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appserver.freeswitch import esl_codec as codec

GREETING = ("file_string://callyard-bench/welcome.wav!callyard-bench/tone.wav"
            "!callyard-bench/enter-digits.wav")
GOODBYE = "callyard-bench/goodbye.wav"
EVENTS = "CHANNEL_PARK CHANNEL_EXECUTE_COMPLETE DTMF CHANNEL_HANGUP"


def commands(calls: dict[str, str], event: codec.LazyEvent) -> list[bytes]:
    """The walk: what to send for one event (``calls``: uuid -> "greeting" | "goodbye")."""
    name, uuid = event.name, event.get("Unique-ID")
    if name == "CHANNEL_PARK" and uuid not in calls:
        calls[uuid] = "greeting"
        return [codec.sendmsg("answer", uuid=uuid, lock=True),
                codec.sendmsg("playback", GREETING, uuid=uuid, lock=True)]
    if name == "DTMF" and calls.get(uuid) == "greeting" and event.get("DTMF-Digit") == "1":
        calls[uuid] = "goodbye"
        return [codec.encode_command(f"api uuid_break {uuid} all"),
                codec.sendmsg("playback", GOODBYE, uuid=uuid, lock=True),
                codec.sendmsg("hangup", "NORMAL_CLEARING", uuid=uuid, lock=True)]
    if name == "CHANNEL_HANGUP":
        calls.pop(uuid, None)
    return []


def serve(context: str, host: str = "127.0.0.1", port: int = 8021,
          password: str = "ClueCon") -> None:
    sock = socket.create_connection((host, port))
    sock.sendall(codec.encode_command(f"auth {password}")
                 + codec.encode_command(f"filter Caller-Context {context}")
                 + codec.encode_command(f"event plain {EVENTS}"))
    parser = codec.FrameParser(codec.MAX_BODY_BYTES)
    calls: dict[str, str] = {}
    replies = 0
    while data := sock.recv(262144):
        out: list[bytes] = []
        for frame in parser.feed(data):
            if frame.content_type == "command/reply":
                if frame.reply_text.startswith("-ERR"):
                    raise SystemExit(f"FreeSWITCH refused: {frame.reply_text}")
                replies += 1
                if replies == 3:  # auth, filter, event: subscribed
                    print("ready", flush=True)
            elif frame.content_type == "text/event-plain":
                out += commands(calls, codec.parse_event_lazy(frame))
        if out:
            sock.sendall(b"".join(out))


if __name__ == "__main__":
    serve(sys.argv[1])
