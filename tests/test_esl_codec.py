"""ESL codec: replay of real FreeSWITCH captures, byte-exact re-encoding, malformed frames."""

from __future__ import annotations

import json

import pytest
from esl_captures import CAPTURES, FILES, read_blocks

from appserver.devkit.sim.esl import server_codec as s
from appserver.freeswitch import esl_codec as c


def _blocks(name: str):  # type: ignore[no-untyped-def]
    if not (CAPTURES / name).exists():
        pytest.skip(f"capture {name} not present")
    return read_blocks(name)


@pytest.mark.parametrize("name", FILES)
def test_replay_capture_reencodes_byte_exact(name: str) -> None:
    parsers: dict[str, c.FrameParser] = {}
    events = 0
    for block in _blocks(name):
        if block.direction != "received" or not block.intact:
            continue
        parser = parsers.setdefault(block.connection, c.FrameParser())
        frames = parser.feed(block.data)
        assert len(frames) == 1, f"t={block.t}: {len(frames)} frames"
        frame = frames[0]
        ctype = frame.content_type
        if ctype.startswith("text/event-"):
            event = c.parse_event(frame)
            assert event.name
            fmt = "json" if ctype == "text/event-json" else "plain"
            assert s.event_frame(event.pairs, event.body, fmt) == block.data, f"t={block.t}"
            events += 1
        elif ctype == "command/reply":
            skip = ("Content-Type", "Reply-Text")
            extra = [(k, v) for k, v in frame.headers.items() if k not in skip]
            if "Event-Name" not in frame.headers:  # connect reply is checked below
                assert s.command_reply(frame.headers["Reply-Text"], extra) == block.data
        elif ctype == "api/response":
            assert s.api_response(frame.text) == block.data
        elif ctype == "text/disconnect-notice":
            h = frame.headers
            rebuilt = s.disconnect_notice(
                h.get("Controlled-Session-UUID", ""),
                h.get("Content-Disposition", ""),
                h.get("Channel-Name", ""),
                linger=h.get("Content-Disposition") == "linger",
            )
            assert rebuilt == block.data
    assert events > 0
    assert all(p.buffered == 0 for p in parsers.values())


def test_edited_capture_blocks_still_parse_as_json() -> None:
    # A few captured paths were edited after recording, so their Content-Length is stale:
    # the envelope parses and the JSON (taken whole) is still a valid event.
    for block in _blocks("freeswitch-esl-inbound.txt"):
        if block.intact:
            continue
        head, _, body = block.data.partition(b"\n\n")
        assert c.parse_header_block(head)["Content-Type"] == "text/event-json"
        assert json.loads(body)["Event-Name"]


def test_connect_reply_and_bgapi_body_shapes() -> None:
    blocks = [b for b in _blocks("freeswitch-esl-outbound.txt") if b.direction == "received"]
    frame = c.FrameParser().feed(blocks[0].data)[0]
    assert next(iter(frame.headers)) == "Event-Name"
    assert frame.headers["Reply-Text"] == "%2BOK%0A"
    assert frame.reply_text == "+OK\n"
    assert frame.headers["Socket-Mode"] == "async" and frame.headers["Control"] == "full"
    job = next(b for b in blocks if b"BACKGROUND_JOB" in b.data and b.connection == "ctl-inbound")
    event = c.parse_event(c.FrameParser().feed(job.data)[0])
    assert event.body.startswith("+OK ") and event.body.endswith("\n")
    assert "Content-Length" not in event.headers


def test_url_encoding_matches_freeswitch() -> None:
    assert s.url_encode("tone_stream://%(500,500,440);loops=2") == (
        "tone_stream%3A//%25(500,500,440)%3Bloops%3D2"
    )
    assert s.url_encode("Tue, 24 Nov") == "Tue,%2024%20Nov"
    assert s.url_encode("+OK\n") == "%2BOK%0A"
    assert s.url_encode("already %3A encoded") == "already%20%3A%20encoded"
    assert s.url_encode("é") == "%C3%A9"
    assert c.url_decode(s.url_encode('a "b" <c> #1 & {x}')) == 'a "b" <c> #1 & {x}'


def test_split_frames_across_reads_and_repeated_headers() -> None:
    data = s.event_frame([("Event-Name", "DTMF"), ("DTMF-Digit", "#"), ("X", "1"), ("X", "2")])
    data += s.command_reply("+OK")
    parser = c.FrameParser()
    frames = []
    for i in range(len(data)):  # one byte at a time
        frames += parser.feed(data[i : i + 1])
    assert [f.content_type for f in frames] == ["text/event-plain", "command/reply"]
    event = c.parse_event(frames[0])
    assert event.headers["DTMF-Digit"] == "#"
    assert event.headers["X"] == "1" and event.pairs[-1] == ("X", "2")
    lazy = c.parse_event_lazy(frames[0])
    assert lazy.get("DTMF-Digit") == "#" and lazy.name == "DTMF"


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: command/reply\nno colon here\n\n",
        b"Content-Length: abc\nContent-Type: text/event-plain\n\n",
        b"Content-Length: -5\n\n",
        b"Content-Length: 999999999999\n\n",
    ],
)
def test_malformed_frames_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(c.ESLProtocolError):
        c.FrameParser().feed(raw)


def test_malformed_event_bodies_raise_protocol_error() -> None:
    bad_json = c.Frame({"Content-Type": "text/event-json"}, b"{not json")
    with pytest.raises(c.ESLProtocolError):
        c.parse_event(bad_json)
    with pytest.raises(c.ESLProtocolError):
        c.parse_event(c.Frame({"Content-Type": "text/event-json"}, b"[1, 2]"))
    with pytest.raises(c.ESLProtocolError):
        c.parse_event(c.Frame({"Content-Type": "text/event-plain"}, b"garbage line\n\n"))
    with pytest.raises(c.ESLProtocolError):
        c.parse_event(c.Frame({"Content-Type": "api/response"}, b"x"))


def test_header_block_without_end_is_bounded() -> None:
    with pytest.raises(c.ESLProtocolError):
        c.FrameParser().feed(b"X: " + b"a" * (c.MAX_HEADER_BYTES + 10))


def test_call_socket_frames_are_capped_at_one_mib_at_the_header() -> None:
    """Finding: the call socket's reader buffered 16 MB bodies. Its parser refuses a body
    above 1 MiB as soon as the header announces it, having buffered nothing of it; the
    largest real frames (an event with every variable) are far below the cap."""
    parser = c.FrameParser(c.MAX_CALL_FRAME_BYTES)
    with pytest.raises(c.ESLProtocolError, match="frame body of 16000000 bytes exceeds the "
                       "1048576-byte limit"):
        parser.feed(b"Content-Type: command/reply\nContent-Length: 16000000\n\n" + b"x" * 1000)
    assert parser.buffered == 1000  # the body bytes that came with the header, no more
    edge = c.FrameParser(c.MAX_CALL_FRAME_BYTES)
    body = b"x" * c.MAX_CALL_FRAME_BYTES
    assert edge.feed(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body)
    largest = max((len(b.data) for name in FILES if (CAPTURES / name).exists()
                   for b in read_blocks(name) if b.direction == "received"), default=0)
    assert largest * 20 < c.MAX_CALL_FRAME_BYTES


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_channel_event_frames_from_cached_encodings_match_a_full_serialisation(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator encodes a channel's headers and variables once per change: every event
    must still be what serialising all its headers gives, as the state and variables move."""
    from appserver.devkit.sim.esl import channel as ch

    monkeypatch.setattr(ch.time, "time", lambda: 1_764_000_000.25)
    chan = ch.SimChannel(caller="+15550100", called="9999", caller_name="Ann & Bob",
                         hostname="node-b")  # a second node (callback affinity)
    leg = ch.SimChannel(caller="+15550100", called="1001", direction="outbound")

    def same(name: str, **kw: object) -> None:
        sequence = ch._sequence
        fast = chan.event_frame(name, fmt, **kw)  # type: ignore[arg-type]
        ch._sequence = sequence
        full = s.event_frame(chan.event_pairs(name, **kw), fmt=fmt)  # type: ignore[arg-type]
        assert fast == full

    same("CHANNEL_EXECUTE", extra=[("Application", "answer")])
    chan.answer_state, chan.call_state, chan.answered_us = "answered", "ACTIVE", 42
    same("CHANNEL_ANSWER")
    chan.variables["current_application_data"] = "ivr/welcome.wav|x=1;y=%20"
    same("CHANNEL_EXECUTE")
    chan.variables.update(playback_ms="1200", playback_samples="9600")
    same("CHANNEL_EXECUTE_COMPLETE", extra=[("Application-Response", "FILE PLAYED")])
    same("DTMF", extra=[("DTMF-Digit", "#")], with_variables=False)
    chan.other = leg
    same("CHANNEL_BRIDGE", lead=[("Bridge-A-Unique-ID", chan.uuid)])
    leg.hangup_us = 99
    same("CHANNEL_UNBRIDGE")
    chan.variables.pop("playback_ms")
    same("CHANNEL_EXECUTE")
    del chan.variables["playback_samples"]
    same("CHANNEL_EXECUTE")
    chan.variables.setdefault("hangup_cause", "NORMAL_CLEARING")
    same("CHANNEL_HANGUP")
    chan.hangup_cause, chan.state = "NORMAL_CLEARING", "CS_HANGUP"
    same("CHANNEL_STATE", with_variables=False)
    chan.variables.clear()
    same("CHANNEL_HANGUP_COMPLETE", extra=[("Hangup-Cause", "NORMAL_CLEARING")])
