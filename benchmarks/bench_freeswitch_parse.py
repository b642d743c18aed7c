"""Event parsing cost: greenswitch 0.0.19's ESLEvent vs our codec, on a FreeSWITCH-shaped
plain event of about 150 headers (the same event as JSON for reference), and the call
socket's reader path: frames split from 64 KiB reads by ``FrameParser`` then parsed lazily.

    .venv/bin/python benchmarks/bench_freeswitch_parse.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greenswitch.esl import ESLEvent

from appserver.devkit.sim.esl import server_codec
from appserver.devkit.sim.esl.channel import SimChannel
from appserver.freeswitch import esl_codec as codec


def sample() -> list[tuple[str, str]]:
    chan = SimChannel(caller="+15550100", called="9999", caller_name="Probe Caller")
    for i in range(60):
        chan.variables[f"sip_h_X-Header-{i}"] = f"value {i}: with spaces, colons & more"
    return chan.event_pairs("CHANNEL_EXECUTE_COMPLETE", [("Application", "playback")])


def rate(fn, payload, seconds: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn(payload)
        n += 100
    return n / elapsed


def reader(chunks: list[bytes]) -> int:
    """What the call socket's reader does with its reads: frame, then parse lazily."""
    parser = codec.FrameParser()
    n = 0
    for chunk in chunks:
        for frame in parser.feed(chunk):
            codec.parse_event_lazy(frame)
            n += 1
    return n


def reader_rate(pairs: list[tuple[str, str]], seconds: float = 1.0) -> float:
    stream = server_codec.event_frame(pairs) * 200
    chunks = [stream[i:i + 65536] for i in range(0, len(stream), 65536)]
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        n += reader(chunks)
    return n / elapsed


def main() -> None:
    pairs = sample()
    plain = server_codec.serialize_plain(pairs)
    frame = codec.Frame({"Content-Type": "text/event-plain"}, plain)
    as_json = server_codec.serialize_json(pairs)
    text = plain.decode()
    print(f"event: {len(pairs)} headers, {len(plain)} bytes plain")
    results = {
        "greenswitch ESLEvent (unquote all, then split)": rate(ESLEvent, text),
        "codec.parse_event_lazy (driver path)": rate(codec.parse_event_lazy, frame),
        "codec.parse_event (all values decoded)": rate(codec.parse_event, frame),
        "json.loads of the JSON form": rate(json.loads, as_json),
        "FrameParser.feed + parse_event_lazy (call socket reader)": reader_rate(pairs),
    }
    for name, value in results.items():
        print(f"{value:10,.0f} events/s  {name}")


if __name__ == "__main__":
    main()
