"""The ESL simulator over real TCP, driven by a raw asyncio client (no Callyard driver)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from esl_raw_client import RawClient

from appserver.devkit.sim.esl import server_codec as s
from appserver.devkit.sim.esl.call import EslSimCall
from appserver.devkit.sim.esl.channel import Filters
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.freeswitch import esl_codec as c


def _event(name: str, app: str = ""):  # type: ignore[no-untyped-def]
    def match(f: c.Frame) -> bool:
        if not f.content_type.startswith("text/event"):
            return False
        event = c.parse_event(f)
        return event.name == name and (not app or event.headers.get("Application") == app)

    return match


@pytest.fixture
async def sim() -> AsyncIterator[FreeswitchSimulator]:
    s = FreeswitchSimulator(workers=[], behaviour=Behaviour(prompt_seconds=0.05))
    await s.start(esl_port=0)
    yield s
    await s.stop()


async def _inbound(sim: FreeswitchSimulator) -> RawClient:
    client = RawClient(*await asyncio.open_connection("127.0.0.1", sim.esl_port))
    assert (await client.next()).content_type == "auth/request"
    return client


async def test_bad_auth_gets_err_and_disconnect_notice(sim: FreeswitchSimulator) -> None:
    client = await _inbound(sim)
    frame = await client.reply("auth WrongPassword")
    assert frame.reply_text == "-ERR invalid"
    notice = await client.next()
    assert notice.content_type == "text/disconnect-notice"
    assert notice.text == s.DISCONNECT_TEXT
    assert await client.reader.read() == b""


async def test_inbound_api_bgapi_events_and_exit(sim: FreeswitchSimulator) -> None:
    client = await _inbound(sim)
    assert (await client.reply("auth ClueCon")).reply_text == "+OK accepted"
    status = await client.reply("api status")
    assert status.content_type == "api/response" and status.text.startswith("UP ")
    unknown = await client.reply("api no_such_command")
    assert unknown.text == "-ERR no_such_command Command not found!\n"
    assert (await client.reply("event json ALL")).reply_text == "+OK event listener enabled json"
    job = await client.reply("bgapi status")
    job_uuid = job.headers["Job-UUID"]
    assert job.reply_text == f"+OK Job-UUID: {job_uuid}"
    bg = c.parse_event(await client.until(_event("BACKGROUND_JOB")))
    assert bg.fmt == "json" and bg.headers["Job-UUID"] == job_uuid and bg.body.startswith("UP ")
    assert (await client.reply("noevents")).reply_text == "+OK no longer listening for events"
    assert (await client.reply("api uuid_kill nope")).text == "-ERR No such channel!\n"
    missing = await client.reply("sendmsg nope")
    assert missing.reply_text == "-ERR invalid session id [nope]"
    assert (await client.reply("exit")).reply_text == "+OK bye"
    assert (await client.next()).content_type == "text/disconnect-notice"


async def test_malformed_command_closes_only_that_connection(sim: FreeswitchSimulator) -> None:
    bad = await _inbound(sim)
    bad.writer.write(b"auth ClueCon\n\nsendmsg x\nno-colon-header\n\n")
    await bad.writer.drain()
    assert (await bad.next()).reply_text == "+OK accepted"
    with pytest.raises((EOFError, ConnectionError)):
        await bad.next()
    good = await _inbound(sim)
    assert (await good.reply("auth ClueCon")).reply_text == "+OK accepted"


async def test_outbound_session_matches_capture_sequence() -> None:
    """A raw worker walks the captured sequence: connect ... hangup, linger, exit."""
    got: asyncio.Queue[RawClient] = asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await got.put(RawClient(r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sim = FreeswitchSimulator(
        workers=[("127.0.0.1", port)], behaviour=Behaviour(prompt_seconds=0.05)
    )
    await sim.start()
    call = await sim.place_call("9999", caller="5551234", caller_name="Probe")
    w = await asyncio.wait_for(got.get(), 3)
    data = await w.reply("connect")
    assert next(iter(data.headers)) == "Event-Name"
    assert data.headers["Reply-Text"] == "%2BOK%0A"
    assert c.url_decode(data.headers["Caller-Destination-Number"]) == "9999"
    assert data.headers["Unique-ID"] == call.call_id
    assert (await w.reply("myevents")).reply_text == "+OK Events Enabled"
    assert (await w.reply("linger")).reply_text == "+OK will linger"
    await w.send("sendmsg", [("call-command", "execute"), ("execute-app-name", "answer")])
    assert (await w.next()).reply_text == "+OK"
    await w.until(_event("CHANNEL_ANSWER"))
    await w.send(
        "sendmsg",
        [("call-command", "execute"), ("execute-app-name", "playback"),
         ("execute-app-arg", "ivr/welcome.wav"), ("Event-UUID", "play-1")],
    )  # fmt: skip
    done = c.parse_event(await w.until(_event("CHANNEL_EXECUTE_COMPLETE", "playback")))
    assert done.headers["Application-UUID"] == "play-1"
    assert done.headers["Application-Response"] == "FILE PLAYED"
    await w.send(
        "sendmsg",
        [("call-command", "execute"), ("execute-app-name", "play_and_get_digits"),
         ("execute-app-arg", "1 4 1 2000 # ivr/menu.wav silence_stream://250 ob_digits \\d+ 500")],
    )  # fmt: skip
    await w.until(_event("CHANNEL_EXECUTE"))
    await call.press("42#")
    digit = c.parse_event(await w.until(_event("DTMF")))
    assert digit.headers["DTMF-Digit"] == "4"
    pagd = c.parse_event(await w.until(_event("CHANNEL_EXECUTE_COMPLETE", "play_and_get_digits")))
    assert pagd.headers["variable_ob_digits"] == "42"
    getvar = await w.reply(f"api uuid_getvar {call.call_id} ob_digits")
    assert getvar.text == "42"
    await w.send("sendmsg", [("call-command", "hangup"), ("hangup-cause", "NORMAL_CLEARING")])
    names = []
    while True:
        frame = await w.next()
        if frame.content_type == "text/disconnect-notice":
            break
        if frame.content_type.startswith("text/event"):
            names.append(c.parse_event(frame).name)
    assert names[0] == "CHANNEL_HANGUP" and names[-1] == "CHANNEL_HANGUP_COMPLETE"
    assert frame.headers["Content-Disposition"] == "linger"
    assert (await w.reply("exit")).reply_text == "+OK bye"
    final = await w.next()
    assert final.headers["Content-Disposition"] == "disconnect" and final.text == s.DISCONNECT_TEXT
    assert call.prompts() == ["file:ivr/welcome", "file:ivr/menu"]
    assert call.transcript.lines()[-1] == "hangup NORMAL_CLEARING app"
    await sim.stop()
    server.close()


async def test_no_worker_plays_fallback_and_hangs_up() -> None:
    sim = FreeswitchSimulator(
        workers=[("127.0.0.1", 1), ("127.0.0.1", 2)], behaviour=Behaviour(prompt_seconds=0.01)
    )
    call = await sim.place_call("9999")
    await call.wait_ended(5)
    assert call.transcript.lines() == [
        "ringing",
        "answered",
        "prompt_started file:ivr/ivr-call_cannot_be_completed_as_dialed",
        "prompt_finished file:ivr/ivr-call_cannot_be_completed_as_dialed done",
        "hangup NORMAL_CLEARING engine",
    ]


async def _raw_worker_call(
    behaviour: Behaviour,
) -> tuple[FreeswitchSimulator, RawClient, EslSimCall, asyncio.Server]:
    """A simulated caller handed to a raw worker that has answered the call."""
    got: asyncio.Queue[RawClient] = asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await got.put(RawClient(r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    sim = FreeswitchSimulator([("127.0.0.1", server.sockets[0].getsockname()[1])], behaviour)
    call = await sim.place_call("9999")
    w = await asyncio.wait_for(got.get(), 3)
    await w.reply("connect")
    await w.reply("myevents")
    await w.send("sendmsg", [("call-command", "execute"), ("execute-app-name", "answer")])
    await w.until(_event("CHANNEL_ANSWER"))
    return sim, w, call, server


async def _bridge(w: RawClient, bleg: str, target: str = "1001") -> None:
    await w.send(
        "sendmsg",
        [("call-command", "execute"), ("execute-app-name", "bridge"),
         ("execute-app-arg", f"{{leg_timeout=20,origination_uuid={bleg}}}user/{target}"),
         ("Event-UUID", "dial-1")],
    )  # fmt: skip
    assert (await w.until(lambda f: f.content_type == "command/reply")).reply_text == "+OK"


async def test_bridge_b_leg_kill_and_caller_displace() -> None:
    sim, w, call, server = await _raw_worker_call(Behaviour(talk_seconds=30))
    bleg = "b0000000-0000-4000-8000-000000000001"
    await _bridge(w, bleg)
    bridge = c.parse_event(await w.until(_event("CHANNEL_BRIDGE"))).headers
    assert (bridge["Unique-ID"], bridge["Bridge-A-Unique-ID"]) == (call.call_id, call.call_id)
    assert bridge["Bridge-B-Unique-ID"] == bridge["Other-Leg-Unique-ID"] == bleg
    assert (bridge["Other-Type"], bridge["Other-Leg-Destination-Number"]) == ("originatee", "1001")
    assert (await w.reply(f"api uuid_exists {bleg}")).text == "true"
    # variables set on the B-leg stay on the B-leg
    assert (await w.reply(f"api uuid_setvar {bleg} x_var 1")).text == "+OK\n"
    assert (await w.reply(f"api uuid_getvar {bleg} x_var")).text == "1"
    assert (await w.reply(f"api uuid_getvar {call.call_id} x_var")).text == "_undef_"
    # hold: the caller's audio displaced by music (both ways), the bridge stays up
    start = f"api uuid_displace {call.call_id} start local_stream://jazz 0"
    assert (await w.reply(start)).text == "+OK Success\n"
    assert (await w.reply(start)).text == "-ERR Cannot displace session!\n"
    stop = f"api uuid_displace {call.call_id} stop local_stream://jazz"
    assert (await w.reply(stop)).text == "+OK Success\n"
    assert (await w.reply(stop)).text == "-ERR Cannot stop displace session!\n"
    mux = f"api uuid_displace {call.call_id} start local_stream://beep 0 mux"
    assert (await w.reply(mux)).text == "+OK Success\n"  # mixed in: not a hold
    assert (await w.reply("api uuid_displace nope start x 0")).text == \
        "-ERR Cannot locate session!\n"
    assert (await w.reply(f"api uuid_displace {call.call_id} go")).text.startswith("-USAGE")
    assert (await w.reply(f"api uuid_kill {bleg}")).text == "+OK\n"
    await w.until(_event("CHANNEL_UNBRIDGE"))
    done = c.parse_event(await w.until(_event("CHANNEL_EXECUTE_COMPLETE", "bridge"))).headers
    assert done["Application-UUID"] == "dial-1"
    assert done["variable_originate_disposition"] == "SUCCESS"
    assert done["variable_last_bridge_hangup_cause"] == "NORMAL_CLEARING"
    assert (await w.reply(f"api uuid_exists {bleg}")).text == "false"
    assert (await w.reply(f"api uuid_kill {bleg}")).text == "-ERR No such channel!\n"
    assert call.channel.alive
    lines = call.transcript.lines()
    assert lines[lines.index("dialed 1001") :] == [
        "dialed 1001", "bridged 1001", "held on", "moh jazz", "moh", "held off",
        "unbridged 1001",
    ]  # fmt: skip
    await sim.stop()
    server.close()


async def test_b_leg_killed_while_ringing_fails_the_bridge() -> None:
    sim, w, call, server = await _raw_worker_call(Behaviour(ring_seconds=10))
    bleg = "b0000000-0000-4000-8000-000000000004"
    await _bridge(w, bleg)
    await asyncio.sleep(0.05)
    assert (await w.reply(f"api uuid_exists {bleg}")).text == "true"
    await w.reply(f"api uuid_kill {bleg}")
    done = c.parse_event(await w.until(_event("CHANNEL_EXECUTE_COMPLETE", "bridge"))).headers
    assert done["variable_originate_disposition"] == "NORMAL_CLEARING"
    assert call.transcript.lines()[-1] == "dialed 1001" and call.channel.alive
    await sim.stop()
    server.close()


async def _send_prompts(w: RawClient, names: list[str], lock: bool) -> None:
    for name in names:
        headers = [("call-command", "execute"), ("execute-app-name", "playback"),
                   ("execute-app-arg", f"{name}.wav")]  # fmt: skip
        await w.send("sendmsg", headers + ([("event-lock", "true")] if lock else []))


async def test_unlocked_sendmsg_runs_nested_last_prompt_first() -> None:
    """Real FreeSWITCH 1.10.12 (../shared/engines, 2026-12-03): two playbacks sent back to back
    without ``event-lock`` both start at once and the second is heard first; the first
    resumes after it (demo/main-menu finished at 8.5 s, demo/welcome at 9.9 s)."""
    sim, w, call, server = await _raw_worker_call(Behaviour(prompt_seconds=0.2))
    await _send_prompts(w, ["demo/welcome", "demo/main-menu"], lock=False)
    await call.transcript.wait_for(lambda e: e.detail == "file:demo/welcome done", 3)
    assert call.transcript.lines()[-4:] == [
        "prompt_started file:demo/welcome",
        "prompt_started file:demo/main-menu",
        "prompt_finished file:demo/main-menu done",
        "prompt_finished file:demo/welcome done",
    ]
    await sim.stop()
    server.close()


async def test_event_locked_sendmsg_runs_in_order() -> None:
    """With ``event-lock: true`` on each message FreeSWITCH plays them one after the other."""
    sim, w, call, server = await _raw_worker_call(Behaviour(prompt_seconds=0.1))
    await _send_prompts(w, ["demo/welcome", "demo/main-menu", "demo/invalid"], lock=True)
    await call.transcript.wait_for(lambda e: e.detail == "file:demo/invalid done", 3)
    assert call.transcript.lines()[-6:] == [
        "prompt_started file:demo/welcome",
        "prompt_finished file:demo/welcome done",
        "prompt_started file:demo/main-menu",
        "prompt_finished file:demo/main-menu done",
        "prompt_started file:demo/invalid",
        "prompt_finished file:demo/invalid done",
    ]
    await sim.stop()
    server.close()


async def test_file_string_plays_its_files_in_turn_and_skips_a_missing_one() -> None:
    """Real FreeSWITCH 1.10.12 (../shared/engines, 2026-12-04): ``playback
    file_string://beep.wav!nosuch-file.wav!beep.wav`` played both beeps and answered ``FILE
    PLAYED`` (playback_ms 750); with every file missing it answered ``FILE NOT FOUND``; a
    break ends the whole playback (one application)."""
    missing = {"file:nosuch", "file:gone"}
    sim, w, call, server = await _raw_worker_call(Behaviour(prompt_seconds=0.05,
                                                            missing=missing))

    async def play(arg: str) -> str:
        await w.send("sendmsg", [("call-command", "execute"), ("execute-app-name", "playback"),
                                 ("execute-app-arg", arg), ("event-lock", "true")])
        done = await w.until(_event("CHANNEL_EXECUTE_COMPLETE", "playback"))
        return c.parse_event(done).headers["Application-Response"]

    assert await play("file_string://a.wav!nosuch.wav!silence_stream://100!b.wav") \
        == "FILE PLAYED"
    assert [line for line in call.transcript.lines() if line.startswith("prompt_")] == [
        "prompt_started file:a", "prompt_finished file:a done",
        "prompt_started file:nosuch", "prompt_finished file:nosuch failed",
        "prompt_started silence:100", "prompt_finished silence:100 done",
        "prompt_started file:b", "prompt_finished file:b done",
    ]
    assert await play("file_string://nosuch.wav!gone.wav") == "FILE NOT FOUND"

    sim.behaviour.prompt_seconds = 5
    await w.send("sendmsg", [("call-command", "execute"), ("execute-app-name", "playback"),
                             ("execute-app-arg", "file_string://long.wav!never.wav"),
                             ("event-lock", "true")])
    await call.transcript.wait_for(lambda e: e.detail == "file:long", 3)
    await w.send(f"api uuid_break {call.call_id}")
    await call.transcript.wait_for(lambda e: e.detail == "file:long stopped", 3)
    await w.until(_event("CHANNEL_EXECUTE_COMPLETE", "playback"))
    assert "prompt_started file:never" not in call.transcript.lines()
    await sim.stop()
    server.close()


async def test_uuid_break_all_stops_every_nested_playback_and_flushes_the_queue() -> None:
    """Real FreeSWITCH: ``uuid_break <uuid> all`` during three nested playbacks ended all
    three at once (and queued applications never ran)."""
    sim, w, call, server = await _raw_worker_call(Behaviour(prompt_seconds=5))
    await _send_prompts(w, ["a", "b", "c"], lock=False)
    await call.transcript.wait_for(lambda e: e.detail == "file:c", 3)
    await _send_prompts(w, ["locked"], lock=True)  # nested in c, then holds the channel
    await call.transcript.wait_for(lambda e: e.detail == "file:locked", 3)
    await _send_prompts(w, ["never"], lock=False)  # queued behind the locked one
    await asyncio.sleep(0.1)
    await w.send(f"api uuid_break {call.call_id} all")
    await call.transcript.wait_for(lambda e: e.detail == "file:a stopped", 3)
    await asyncio.sleep(0.1)
    finished = [line for line in call.transcript.lines() if line.startswith("prompt_")]
    assert finished[-4:] == [f"prompt_finished file:{n} stopped" for n in ("locked", "c", "b", "a")]
    assert "prompt_started file:never" not in call.transcript.lines()
    await sim.stop()
    server.close()


async def test_locked_playback_holds_later_messages_until_it_ends_or_breaks() -> None:
    """While an event-locked playback runs, a later message waits (the channel's private
    queue is not parsed); ``uuid_break`` without ``all`` ends the playback and the next runs."""
    sim, w, call, server = await _raw_worker_call(Behaviour(prompt_seconds=5))
    await _send_prompts(w, ["long", "next"], lock=True)
    await call.transcript.wait_for(lambda e: e.detail == "file:long", 3)
    await asyncio.sleep(0.2)
    assert "prompt_started file:next" not in call.transcript.lines()
    await w.reply(f"api uuid_break {call.call_id}")
    await call.transcript.wait_for(lambda e: e.detail == "file:next", 3)
    assert call.transcript.lines()[-3:] == [
        "prompt_started file:long", "prompt_finished file:long stopped", "prompt_started file:next"
    ]
    await sim.stop()
    server.close()


def test_filters_pass_events_as_mod_event_socket_does() -> None:
    """Filter lines: none passes all; else an event passes when one of its headers has a
    line's value (names and values compared case-blind); ``add``, ``delete`` and the
    replies as FreeSWITCH 1.10.12 words them."""
    f = Filters()
    own = [("Event-Name", "DTMF"), ("Unique-ID", "AB-1")]
    other = [("Event-Name", "DTMF"), ("Unique-ID", "cd-2")]
    assert f.passes(other) and not f.only_channel("ab-1")
    assert f.command("unique-id ab-1") == "+OK filter added. [unique-id]=[ab-1]"
    assert f.passes(own) and not f.passes(other) and not f.passes([("Event-Name", "HEARTBEAT")])
    assert f.only_channel("AB-1")
    assert f.command("add Event-Name HEARTBEAT") == "+OK filter added. [Event-Name]=[HEARTBEAT]"
    assert f.passes([("Event-Name", "heartbeat")]) and not f.only_channel("ab-1")
    assert f.command("Unique-ID") == "-ERR invalid syntax"
    assert f.command("delete Event-Name") == "+OK filter deleted. [Event-Name][]"
    assert f.lines == [("unique-id", "ab-1")]
    assert not f.passes([("Event-Name", "HEARTBEAT")]) and f.passes(own)
    assert f.command("delete all") == "+OK filter deleted. [all][]"
    assert f.lines == [] and f.passes(other)


async def test_a_transfer_to_an_ivr_number_runs_the_socket_extension_again() -> None:
    """As the shipped dialplan: a transfer to a number of the Callyard extension connects to
    a worker again (the call's profile has the new number); to any other, the call leaves."""
    got: asyncio.Queue[RawClient] = asyncio.Queue()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await got.put(RawClient(r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    sim = FreeswitchSimulator([("127.0.0.1", server.sockets[0].getsockname()[1])],
                              Behaviour(transfer_seconds=0.01))
    call = await sim.place_call("9999")
    first = await asyncio.wait_for(got.get(), 3)
    await first.reply("connect")
    await first.send("sendmsg", [("call-command", "execute"), ("execute-app-name", "transfer"),
                                 ("execute-app-arg", "8001 XML default")])
    second = await asyncio.wait_for(got.get(), 3)
    data = await second.reply("connect")
    assert (data.headers["Unique-ID"], data.headers["Caller-Destination-Number"]) == (
        call.call_id, "8001")
    await second.send("sendmsg", [("call-command", "execute"), ("execute-app-name", "transfer"),
                                  ("execute-app-arg", "1000 XML default")])
    await call.wait_ended(3)
    assert got.empty()
    assert [line for line in call.transcript.lines() if line.startswith("transferred")] == [
        "transferred 8001", "transferred 1000"]
    await sim.stop()
    server.close()
