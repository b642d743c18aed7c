"""The FreeSWITCH call driver on its own: flow commands -> ESL bytes, ESL events -> flow
events (no sockets, no gevent hub switching; the end-to-end tests cover the wire)."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from appserver.devkit.sim.esl import server_codec
from appserver.freeswitch import esl_codec as codec
from appserver.freeswitch.driver import (
    MOH_STRETCH_SECONDS,
    CallDriver,
    DriverConfig,
    setup_commands,
)
from ivr import calls as c

# as the shipped dialplan starts a call (its multiset)
INFO = c.CallInfo("uuid-1", "freeswitch", "+15550100", "9999",
                  variables={"playback_terminators": "none"})
SETUP_COMMANDS = setup_commands(INFO.call_id)


@dataclass
class Script:
    """A flow that returns scripted commands and records what it was given."""

    on_start: list[c.Command]
    replies: dict[type, list[c.Command]] = field(default_factory=dict)
    seen: list[c.Event] = field(default_factory=list)
    fail_on: type | None = None
    done: bool = False

    def start(self, call: c.CallInfo) -> list[c.Command]:
        return list(self.on_start)

    def handle(self, event: c.Event) -> list[c.Command]:
        self.seen.append(event)
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise RuntimeError("boom")
        return list(self.replies.pop(type(event), []))


def make(flow: Script, **kw: object) -> tuple[CallDriver, list[bytes]]:
    sent: list[bytes] = []
    driver = CallDriver(INFO, sent.extend, DriverConfig(dial_template="sofia/gw/{target}"), **kw)  # type: ignore[arg-type]
    driver.start(flow)  # type: ignore[arg-type]
    return driver, sent


def requests(sent: list[bytes]) -> list[server_codec.Request]:
    return server_codec.RequestParser().feed(b"".join(sent))


def apps(sent: list[bytes]) -> list[tuple[str, str, str]]:
    return [
        (
            r.headers.get("execute-app-name", ""),
            r.headers.get("execute-app-arg", ""),
            r.headers.get("Event-UUID", ""),
        )
        for r in requests(sent)
        if r.command == "sendmsg" and r.headers.get("call-command") == "execute"
    ]


def complete(
    tag: str, app: str = "playback", response: str = "FILE PLAYED", **variables: str
) -> codec.LazyEvent:
    raw = {"Event-Name": "CHANNEL_EXECUTE_COMPLETE", "Application": app, "Application-UUID": tag,
           "Application-Response": response}  # fmt: skip
    raw.update({f"variable_{k}": v for k, v in variables.items()})
    return codec.LazyEvent(raw)


def test_setup_subscribes_narrowly_and_lingers() -> None:
    _, sent = make(Script([c.Answer()]))
    commands = [r.command for r in requests(sent)]
    assert commands[:3] == ["filter Unique-ID uuid-1",  # this call's events; only these:
                            "event plain CHANNEL_ANSWER CHANNEL_EXECUTE_COMPLETE DTMF "
                            "CHANNEL_HANGUP", "linger"]
    assert "myevents" not in commands  # see setup_commands: it costs the engine per socket
    assert [a for a, _, _ in apps(sent)] == ["answer"]


def test_a_play_stops_in_the_engine_on_its_stop_keys_alone() -> None:
    """playback_terminators is a play's stop_keys (none without), set by an api command
    (no application) and only when it changes: FreeSWITCH then ends the prompt in the frame
    it reads the key, 40 ms sooner than a uuid_break after the DTMF event (1.10.12)."""
    prompt = (c.Prompt("file", "ivr/menu"),)
    flow = Script([c.Answer(), c.Play("p0", prompt, c.ALL_KEYS)],
                  replies={c.PlayFinished: [c.Play("p1", prompt, "12")]})
    driver, sent = make(flow)
    setvar = "api uuid_setvar uuid-1 playback_terminators"
    assert [r.command for r in requests(sent)][3:] == [
        "sendmsg", f"{setvar} 0123456789*#ABCD", "sendmsg"]  # answer, keys, playback
    assert [a for a, _, _ in apps(sent)] == ["answer", "playback"]
    tag = apps(sent)[-1][2]
    sent.clear()
    driver.on_event(complete(tag))
    assert [r.command for r in requests(sent)] == [f"{setvar} 12", "sendmsg"]

    sent.clear()  # the same keys again: nothing to set; none: set
    driver._run([c.StopPlay("p1"), c.Play("p2", prompt, "12")])
    driver._run([c.StopPlay("p2"), c.Play("p3", prompt)])
    assert [r.command for r in requests(sent)] == [
        "api uuid_break uuid-1 all", "sendmsg", "api uuid_break uuid-1 all",
        f"{setvar} none", "sendmsg"]


def test_terminators_change_in_order_behind_what_still_plays() -> None:
    """A play queued behind a running one gets its keys by a ``set`` application in the
    queue (an api command would change them under the running play); a ``uuid_break all``
    may drop that set, so the next play sets its keys again."""
    prompt = (c.Prompt("file", "ivr/menu"),)
    driver, sent = make(Script([c.Play("p0", prompt), c.Play("p1", prompt, "#")]))
    assert [(a, arg) for a, arg, _ in apps(sent)] == [
        ("playback", "ivr/menu.wav"), ("set", "playback_terminators=#"),
        ("playback", "ivr/menu.wav")]
    assert apis(sent) == []  # p0: none, as the dialplan left it
    sent.clear()
    driver._run([c.StopPlay("p0"), c.Play("p2", prompt, "#")])
    assert apis(sent) == ["uuid_break uuid-1 all", "uuid_setvar uuid-1 playback_terminators #"]
    sent.clear()
    driver._run([c.StartMoh("default")])  # no key stops the music
    assert apis(sent) == []  # p2 still plays: in order
    assert apps(sent)[0][:2] == ("set", "playback_terminators=none")
    sent.clear()
    driver._run([c.Play("p3", prompt, "#"), c.Transfer("1000")])  # as the dialplan gave it
    assert apis(sent)[-2:] == ["uuid_break uuid-1 all",
                               "uuid_setvar uuid-1 playback_terminators none"]
    assert apps(sent)[-1][0] == "transfer"


def test_terminators_set_in_order_are_known_once_the_set_ran() -> None:
    """Once the queued ``set`` ran (its CHANNEL_EXECUTE_COMPLETE), a ``uuid_break all``
    cannot drop it: the next play with the same keys sets nothing."""
    prompt = (c.Prompt("file", "ivr/menu"),)
    driver, sent = make(Script([c.Play("p0", prompt), c.Play("p1", prompt, "#")]))
    (_, _, first), (_, _, set_tag), _ = apps(sent)
    assert set_tag  # its completion is how the driver knows it ran
    driver.on_event(complete(first))
    driver.on_event(complete(set_tag, app="set", response="_none_"))
    sent.clear()
    driver._run([c.StopPlay("p1"), c.Play("p2", prompt, "#")])
    assert apis(sent) == ["uuid_break uuid-1 all"]
    assert [a for a, _, _ in apps(sent)] == ["playback"]
    sent.clear()  # an application with no name of the worker's (not FreeSWITCH's): nothing
    driver.on_event(complete("", app="set"))
    assert sent == []


def test_the_setup_goes_out_with_the_flows_first_commands_in_one_write() -> None:
    """One write (one send) per call less; a flow with nothing to say at its start still
    gets its setup written at once, and a flow that fails to start its polite end."""
    writes: list[list[bytes]] = []
    CallDriver(INFO, writes.append, DriverConfig()).start(Script([c.Answer()]))  # type: ignore[arg-type]
    assert len(writes) == 1
    assert [r.command for r in requests(writes[0])][:3] == [
        r.command for r in requests(SETUP_COMMANDS)]
    assert apps(writes[0])[-1][0] == "answer"

    writes.clear()
    CallDriver(INFO, writes.append, DriverConfig()).start(Script([]))  # type: ignore[arg-type]
    assert len(writes) == 1 and requests(writes[0])[0].command == "filter Unique-ID uuid-1"

    class Broken(Script):
        def start(self, call: c.CallInfo) -> list[c.Command]:
            raise RuntimeError("boom")

    writes.clear()
    CallDriver(INFO, writes.append, DriverConfig()).start(Broken([]))  # type: ignore[arg-type]
    assert len(writes) == 1
    assert requests(writes[0])[0].command == "filter Unique-ID uuid-1"
    assert [a for a, _, _ in apps(writes[0])][-3:] == ["answer", "playback", "hangup"]


def test_terminators_the_dialplan_disabled_are_not_disabled_again() -> None:
    """The shipped dialplan sets playback_terminators=none with its other variables in one
    multiset: one command less per call for FreeSWITCH (bench_native.py). A dialplan of
    one's own that did not: the first play sets them."""
    prompt = (c.Prompt("file", "ivr/menu"),)
    sent: list[bytes] = []
    CallDriver(INFO, sent.extend, DriverConfig()).start(Script([c.Answer(), c.Play("p", prompt)]))  # type: ignore[arg-type]
    assert [a for a, _, _ in apps(sent)] == ["answer", "playback"] and apis(sent) == []
    sent.clear()
    info = c.CallInfo("uuid-1", "freeswitch", "+15550100", "9999")
    CallDriver(info, sent.extend, DriverConfig()).start(Script([c.Answer(), c.Play("p", prompt)]))  # type: ignore[arg-type]
    assert [a for a, _, _ in apps(sent)] == ["answer", "playback"]
    assert apis(sent) == ["uuid_setvar uuid-1 playback_terminators none"]


def test_variables_of_a_batch_are_set_by_one_api_command_not_applications() -> None:
    """Each ``set`` application costs FreeSWITCH two events with every channel variable:
    the variables a batch sets go in one ``uuid_setvar_multi`` where the first one was; a
    value it would split, unquote or trim is set by the ``set`` application as before."""
    flow = Script([c.Answer(), c.SetVariable("ivr_menu", "main"), c.StopPlay("p0"),
                   c.SetVariable("ivr_menu_path", "main/sales & more"),
                   c.SetVariable("note", "a;b"), c.SetVariable("quoted", "'x'"),
                   c.SetVariable("padded", " x"), c.SetVariable("gone", "")])  # fmt: skip
    _, sent = make(flow)
    assert apis(sent) == ["uuid_setvar_multi uuid-1 ivr_menu=main;ivr_menu_path=main/sales & "
                          "more;gone="]  # fmt: skip
    assert [(a, arg) for a, arg, _ in apps(sent)][-3:] == [
        ("set", "note=a;b"), ("set", "quoted='x'"), ("set", "padded= x")]
    lines = [r.command for r in requests(sent)]
    assert lines.index("api uuid_setvar_multi uuid-1 ivr_menu=main;ivr_menu_path=main/sales & "
                       "more;gone=") == len(SETUP_COMMANDS) + 1  # after setup and answer


def test_play_maps_prompts_and_finishes_on_last_complete() -> None:
    """Consecutive files and silences are one application (a ``file_string://``): FreeSWITCH
    runs one and sends one completion, with every channel variable, instead of one each."""
    prompts = (
        c.Prompt("file", "ivr/welcome"),
        c.Prompt("file", "custom/x.mp3"),
        c.Prompt("tts", "Hello there"),
        c.Prompt("digits", "42"),
        c.Prompt("number", "42"),
        c.Prompt("silence", "500"),
        c.Prompt("file", "ivr/bye"),
        c.Prompt("number", "7"),
        c.Prompt("file", "ivr/alone"),
    )
    flow = Script([c.Play("p1", prompts, language="en")])
    driver, sent = make(flow)
    played = [a for a in apps(sent) if a[0] != "set"]
    assert [(a, arg) for a, arg, _ in played] == [
        ("playback", "file_string://ivr/welcome.wav!custom/x.mp3"),
        ("speak", "flite|kal|Hello there"),
        ("say", "en number iterated 42"),
        ("say", "en number pronounced 42"),
        ("playback", "file_string://silence_stream://500!ivr/bye.wav"),
        ("say", "en number pronounced 7"),
        ("playback", "ivr/alone.wav"),
    ]
    tags = [t for _, _, t in played]
    assert len(set(tags)) == len(tags) and all(tags)
    for tag in tags[:-1]:
        driver.on_event(complete(tag))
    assert flow.seen == []
    driver.on_event(complete(tags[-1]))
    assert flow.seen == [c.PlayFinished("p1", "done")]


def test_missing_file_reports_failed() -> None:
    flow = Script([c.Play("p1", (c.Prompt("file", "nope"),))])
    driver, sent = make(flow)
    driver.on_event(complete(apps(sent)[-1][2], response="FILE NOT FOUND"))
    assert flow.seen == [c.PlayFinished("p1", "failed")]


def test_stop_play_breaks_all_and_finishes_every_outstanding_play_once() -> None:
    flow = Script([c.Play("a", (c.Prompt("file", "x"),)), c.Play("b", (c.Prompt("file", "y"),))])
    flow.replies[c.Dtmf] = [c.StopPlay("a")]
    driver, sent = make(flow)
    tags = [t for a, _, t in apps(sent) if a == "playback"]
    driver.on_event(codec.LazyEvent({"Event-Name": "DTMF", "DTMF-Digit": "%23"}))
    assert flow.seen == [
        c.Dtmf("#"),
        c.PlayFinished("a", "stopped"),
        c.PlayFinished("b", "stopped"),
    ]
    assert requests(sent)[-1].command == "api uuid_break uuid-1 all"
    for tag in tags:  # late completions of broken prompts are not delivered again
        driver.on_event(complete(tag))
    assert len(flow.seen) == 3


def test_dial_outcomes_from_originate_disposition() -> None:
    cases = [
        ("SUCCESS", "answered"),
        ("USER_BUSY", "busy"),
        ("NO_ANSWER", "no_answer"),
        ("UNALLOCATED_NUMBER", "failed"),
    ]
    for disposition, outcome in cases:
        flow = Script([c.Dial("1001", timeout=12)])
        driver, sent = make(flow)
        app, arg, tag = apps(sent)[-1]
        # media_mix: real FreeSWITCH offered the dialled leg only the caller's codec (L16 from
        # a loopback caller): INCOMPATIBLE_DESTINATION before any INVITE reached LiveKit SIP
        bleg = re.fullmatch(r"\{leg_timeout=12,origination_uuid=([0-9a-f-]{36}),"
                            r"media_mix_inbound_outbound_codecs=true\}sofia/gw/1001", arg)
        assert app == "bridge" and bleg
        driver.on_event(complete(tag, "bridge", "_none_", originate_disposition=disposition))
        assert flow.seen == [c.DialResult("1001", outcome, disposition)]  # type: ignore[arg-type]


def test_enqueue_without_runtime_fails_at_once_and_with_runtime_waits_for_deliver() -> None:
    flow = Script([c.Enqueue("support")])
    make(flow)
    assert flow.seen == [c.QueueResult("support", "failed", "no queue runtime")]
    asked: list[tuple[c.CallInfo, c.Enqueue]] = []
    flow = Script([c.Enqueue("support", priority=3)])
    driver, _ = make(flow, queue_runtime=lambda info, cmd: asked.append((info, cmd)))
    assert asked == [(INFO, c.Enqueue("support", priority=3))] and flow.seen == []
    driver.deliver(c.QueueResult("support", "answered"))
    assert flow.seen == [c.QueueResult("support", "answered")]


def test_transfer_hangup_and_nothing_after() -> None:
    flow = Script([c.Transfer("1000"), c.Play("late", (c.Prompt("file", "x"),))])
    driver, sent = make(flow)
    assert apps(sent)[-1][:2] == ("transfer", "1000 XML default")
    driver.on_event(codec.LazyEvent({"Event-Name": "DTMF", "DTMF-Digit": "1"}))
    assert flow.seen == []
    driver.on_event(
        codec.LazyEvent({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "NORMAL_CLEARING"})
    )
    driver.on_event(
        codec.LazyEvent({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "NORMAL_CLEARING"})
    )
    assert flow.seen == [c.HungUp("NORMAL_CLEARING")]
    flow = Script([c.Hangup("USER_BUSY")])
    _, sent = make(flow)
    last = requests(sent)[-1]
    assert last.headers == {"call-command": "hangup", "hangup-cause": "USER_BUSY"}


def test_caller_hangup_stops_commands_and_socket_close_reports_once() -> None:
    flow = Script([c.Answer()])
    flow.replies[c.HungUp] = [c.Play("x", (c.Prompt("file", "x"),))]
    driver, sent = make(flow)
    before = len(sent)
    driver.on_event(
        codec.LazyEvent({"Event-Name": "CHANNEL_HANGUP", "Hangup-Cause": "ORIGINATOR_CANCEL"})
    )
    driver.on_socket_closed()
    assert flow.seen == [c.HungUp("ORIGINATOR_CANCEL")] and len(sent) == before
    flow2 = Script([c.Answer()])
    driver2, _ = make(flow2)
    driver2.on_socket_closed()
    assert flow2.seen == [c.HungUp("SOCKET_CLOSED")]


def test_flow_exception_ends_the_call_politely() -> None:
    flow = Script([c.Answer()], fail_on=c.Answered)
    driver, sent = make(flow)
    driver.on_event(codec.LazyEvent({"Event-Name": "CHANNEL_ANSWER"}))
    tail = [(a, arg) for a, arg, _ in apps(sent)[-3:]]
    assert tail == [
        ("answer", ""),
        ("playback", DriverConfig().fallback_prompt),
        ("hangup", "NORMAL_CLEARING"),
    ]
    driver.on_event(codec.LazyEvent({"Event-Name": "DTMF", "DTMF-Digit": "1"}))
    assert flow.seen == [c.Answered()]


def test_no_flow_gets_polite_message() -> None:
    sent: list[bytes] = []
    info = c.CallInfo("uuid-1", "freeswitch", "+15550100", "9999")  # a dialplan of its own
    CallDriver(info, sent.extend, DriverConfig()).start(None)
    assert [a for a, _, _ in apps(sent)] == ["answer", "playback", "hangup"]
    assert apis(sent) == ["uuid_setvar uuid-1 playback_terminators none"]  # no key stops it


def apis(sent: list[bytes]) -> list[str]:
    return [r.command.removeprefix("api ") for r in requests(sent) if r.command.startswith("api ")]


def dialled(flow: Script) -> tuple[CallDriver, list[bytes], str, str]:
    """A driver whose flow dialled 1001 (the bridge application is running)."""
    driver, sent = make(flow)
    _, arg, tag = apps(sent)[-1]
    bleg = re.split(r"[,}]", arg.split("origination_uuid=")[1])[0]
    return driver, sent, tag, bleg


def test_hold_displaces_the_caller_and_end_dial_kills_the_b_leg() -> None:
    flow = Script([c.Dial("1001")])
    flow.replies[c.TimerFired] = [c.Hold("jazz")]
    driver, sent, tag, bleg = dialled(flow)
    driver.deliver(c.TimerFired("hold"))
    assert apis(sent) == ["uuid_displace uuid-1 start local_stream://jazz 0"]
    flow.replies[c.TimerFired] = [c.Hold(), c.Unhold(), c.Unhold(), c.EndDial(), c.EndDial()]
    driver.deliver(c.TimerFired("more"))  # a second Hold, Unhold and EndDial are no-ops
    assert apis(sent)[1:] == ["uuid_displace uuid-1 stop local_stream://jazz",
                              f"uuid_kill {bleg}"]  # fmt: skip
    driver.on_event(complete(tag, "bridge", "_none_", originate_disposition="SUCCESS",
                             last_bridge_hangup_cause="NORMAL_CLEARING"))  # fmt: skip
    assert flow.seen[-1] == c.DialResult("1001", "answered", "NORMAL_CLEARING")
    flow.replies[c.TimerFired] = [c.Hold(), c.EndDial()]
    count = len(sent)
    driver.deliver(c.TimerFired("late"))  # the dial is over: nothing to act on
    assert len(sent) == count


def test_the_party_leaving_a_held_call_ends_the_music() -> None:
    flow = Script([c.Dial("1001"), c.Hold()])
    driver, sent, tag, _ = dialled(flow)
    driver.on_event(complete(tag, "bridge", "_none_", originate_disposition="SUCCESS"))
    assert apis(sent) == ["uuid_displace uuid-1 start local_stream://default 0",
                          "uuid_displace uuid-1 stop local_stream://default"]  # fmt: skip
    assert flow.seen[-1].outcome == "answered"  # type: ignore[union-attr]


def test_hold_is_ignored_without_a_dial(caplog: pytest.LogCaptureFixture) -> None:
    flow = Script(
        [c.Answer(), c.Hold(), c.Unhold(), c.EndDial(), c.Play("p", (c.Prompt("file", "x"),))]
    )
    with caplog.at_level(logging.WARNING, "callyard.freeswitch"):
        _, sent = make(flow)
    assert apis(sent) == [] and apps(sent)[-1][:2] == ("playback", "x.wav")
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "Hold ignored", "Unhold ignored", "EndDial ignored"
    ]  # fmt: skip
    # ringing: EndDial kills the leg and the dial reports no answer
    flow = Script([c.Dial("1001"), c.EndDial()])
    driver, sent, tag, bleg = dialled(flow)
    assert apis(sent) == [f"uuid_kill {bleg}"]
    driver.on_event(complete(tag, "bridge", "_none_", originate_disposition="NORMAL_CLEARING"))
    assert flow.seen == [c.DialResult("1001", "no_answer", "NORMAL_CLEARING")]
    # a music class that is not one token never reaches an api line
    flow = Script([c.Dial("1001"), c.Hold("x y; uuid_kill all")])
    driver, sent, _, _ = dialled(flow)
    assert apis(sent) == []


def test_refusals_after_the_channel_is_gone_are_not_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from appserver.freeswitch.connection import CallConnection

    session = CallConnection(socket.socket())  # never started: only the reader's bookkeeping
    replies = [server_codec.api_response("-ERR No such channel!\n"),
               server_codec.command_reply("-ERR nope"),
               server_codec.command_reply("-ERR call is not active")]  # fmt: skip
    session._commands_sent = [None] * len(replies)
    with caplog.at_level(logging.DEBUG, "callyard.freeswitch"):
        for frame in codec.FrameParser().feed(b"".join(replies)):
            session._handle_frame(frame)
    levels = [(r.levelname, r.getMessage().split(": ", 1)[1]) for r in caplog.records]
    assert levels == [
        ("DEBUG", "-ERR No such channel!"), ("WARNING", "-ERR nope"),
        ("DEBUG", "-ERR call is not active"),
    ]  # fmt: skip
    hangup = server_codec.event_frame([("Event-Name", "CHANNEL_HANGUP"),
                                       ("Unique-ID", "uuid-1")])
    session._commands_sent = [None]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "callyard.freeswitch"):
        for frame in codec.FrameParser().feed(hangup + server_codec.command_reply("-ERR nope")):
            session._handle_frame(frame)
    assert [r.levelname for r in caplog.records] == ["DEBUG"]  # after our hangup: expected
    session.close()


def test_commands_a_send_takes_in_part_are_written_whole() -> None:
    """send_nowait writes with one send(); what the kernel did not take goes by sendall."""
    from appserver.freeswitch.connection import CallConnection

    class PartialSocket:
        def __init__(self) -> None:
            self.wire = b""

        def send(self, data: bytes) -> int:
            self.wire += data[:5]
            return min(5, len(data))

        def sendall(self, data: memoryview) -> None:
            self.wire += bytes(data)

    sock = PartialSocket()
    session = CallConnection(sock)  # type: ignore[arg-type]
    commands = [codec.encode_command("myevents"), codec.sendmsg("answer", lock=True)]
    assert session.send_nowait(commands)
    assert sock.wire == b"".join(commands)
    assert session._commands_sent == [None, None]  # both replies are expected


def test_transfer_is_confirmed_when_freeswitch_takes_the_call() -> None:
    flow = Script([c.Answer(), c.Transfer("1002")])
    driver, sent = make(flow)
    assert apps(sent)[-1][:2] == ("transfer", "1002 XML default")
    driver.on_event(codec.LazyEvent({"Event-Name": "DTMF", "DTMF-Digit": "1"}))  # too late
    driver.on_socket_closed()  # the channel left the socket for the dialplan
    assert flow.seen == [c.TransferResult("1002", ok=True)]
    # a caller who hangs up before the transfer runs is a hangup, not a transfer
    flow = Script([c.Answer(), c.Transfer("1002")])
    driver, sent = make(flow)
    driver.on_event(codec.LazyEvent({"Event-Name": "CHANNEL_HANGUP",
                                     "Hangup-Cause": "NORMAL_CLEARING"}))
    driver.on_socket_closed()
    assert flow.seen == [c.HungUp("NORMAL_CLEARING")]


def test_transfer_while_held_takes_the_music_off_first() -> None:
    flow = Script([c.Dial("1001"), c.Hold(), c.Transfer("1002")])
    _, sent = make(flow)
    assert apis(sent) == ["uuid_displace uuid-1 start local_stream://default 0",
                          "uuid_displace uuid-1 stop local_stream://default"]  # fmt: skip
    assert apps(sent)[-1][:2] == ("transfer", "1002 XML default")


def test_every_execute_is_event_locked_so_freeswitch_runs_them_in_order() -> None:
    """Without ``event-lock`` real FreeSWITCH runs a message that arrives during a playback
    nested inside it: the demo greeting (welcome, main-menu) was heard main-menu first."""
    flow = Script([c.Answer(), c.SetVariable("x", "1"), c.StartMoh(), c.StopMoh(),
                   c.Play("p", (c.Prompt("file", "welcome"), c.Prompt("file", "main-menu"))),
                   c.Dial("1001")])  # fmt: skip
    _, sent = make(flow)
    executes = [r for r in requests(sent) if r.headers.get("call-command") == "execute"]
    # the music is three (set, playback, unset: see the stretch test), the two files one
    assert len(executes) == 6
    assert all(r.headers.get("event-lock") == "true" for r in executes)


def test_hold_music_plays_in_bounded_stretches_until_stopped() -> None:
    """On FreeSWITCH the running application outlives a dead worker's socket: music without
    an end would keep the caller from the next worker for good (tests/real/
    test_faults_real.py). So music plays MOH_STRETCH_SECONDS at a time, the next stretch
    sent when one ends, none after StopMoh; the bound applies to the music alone."""
    flow = Script([c.StartMoh("default")], {c.Dtmf: [c.StopMoh()]})
    driver, sent = make(flow)
    stretch = [("set", f"playback_timeout_sec={MOH_STRETCH_SECONDS}"),
               ("playback", "local_stream://default"), ("unset", "playback_timeout_sec")]
    assert [(a, arg) for a, arg, _ in apps(sent)[-3:]] == stretch
    first = apps(sent)[-2][2]
    sent.clear()
    driver.on_event(complete(first))
    assert [(a, arg) for a, arg, _ in apps(sent)] == stretch
    second = apps(sent)[1][2]
    assert second != first
    driver.on_event(codec.LazyEvent({"Event-Name": "DTMF", "DTMF-Digit": "1"}))
    assert [r.command for r in requests(sent)][-1] == "api uuid_break uuid-1"
    sent.clear()
    driver.on_event(complete(second))  # broken off by StopMoh: no next stretch
    assert sent == [] and flow.seen == [c.Dtmf("1")]


def test_hangup_and_transfer_break_off_what_plays_first() -> None:
    """An event-locked prompt or music holds the channel's queue: Hangup and Transfer must
    not wait behind it (the contract hands the call away at once)."""
    flow = Script([c.Play("p", (c.Prompt("file", "long"),)), c.Hangup()])
    _, sent = make(flow)
    tail = [r.command for r in requests(sent)][-2:]
    assert tail == ["api uuid_break uuid-1 all", "sendmsg"]
    assert flow.seen == []  # handed away: only HungUp may follow
    flow = Script([c.StartMoh("default"), c.Transfer("1000")])
    _, sent = make(flow)
    tail = [r.command for r in requests(sent)][-2:]
    assert tail == ["api uuid_break uuid-1 all", "sendmsg"]
    assert apps(sent)[-1][:2] == ("transfer", "1000 XML default")
    flow = Script([c.StartMoh("default"), c.StopMoh(), c.Hangup()])  # nothing left to break
    _, sent = make(flow)
    assert [r.command for r in requests(sent)][-2:] == ["api uuid_break uuid-1", "sendmsg"]


def test_a_hangup_after_a_play_is_queued_behind_it_without_a_break() -> None:
    """Hangup(after_play): FreeSWITCH runs ``hangup`` as the goodbye ends (event-locked, in
    order), with no round trip through the worker; nothing breaks the play off."""
    flow = Script([c.Play("bye", (c.Prompt("file", "a"), c.Prompt("file", "b"))),
                   c.Hangup("NORMAL_CLEARING", after_play="bye")])
    driver, sent = make(flow)
    assert not any(r.command.startswith("api uuid_break") for r in requests(sent))
    assert [a[:2] for a in apps(sent)][-2:] == [("playback", "file_string://a.wav!b.wav"),
                                                ("hangup", "NORMAL_CLEARING")]
    tag = apps(sent)[-2][2]
    driver.on_event(complete(tag))
    assert flow.seen == []  # handed away: not even the goodbye's PlayFinished
    driver.on_event(codec.LazyEvent({"Event-Name": "CHANNEL_HANGUP",
                                     "Hangup-Cause": "NORMAL_CLEARING"}))
    assert flow.seen == [c.HungUp("NORMAL_CLEARING")]  # the end: the CDR closes now
    driver, _ = make(Script(list(flow.on_start)))
    driver.on_socket_closed()  # gone without a CHANNEL_HANGUP: the flow still hears the end
    assert driver.flow.seen == [c.HungUp("SOCKET_CLOSED")]  # type: ignore[union-attr]
    # a play already over (or never started): the hangup acts at once, as a plain Hangup
    flow = Script([c.Hangup(after_play="gone")])
    _, sent = make(flow)
    assert [r.command for r in requests(sent)][-1] == "sendmsg"
    assert requests(sent)[-1].headers.get("call-command") == "hangup"

# ---------------------------------------------------------------- the last line of defence
# Hardening findings: a TTS prompt or set value holding "\n\n" was written into the command
# stream, so FreeSWITCH ran a second, injected application; "${...}" is expanded by
# FreeSWITCH in application arguments (${system(...)} runs a shell command). Menus can no
# longer hold either (database, API, validator), but flows are code and templates render
# caller data: the driver refuses such a command alone, logs it with the call id, and the
# call goes on.
INJECTED = "Welcome\n\nsendmsg\ncall-command: execute\nexecute-app-name: playback\n" \
           "execute-app-arg: /etc/passwd"


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "refused" in r.getMessage()
            and getattr(r, "call_id", None) == INFO.call_id]


@pytest.mark.parametrize("bad", [
    c.Prompt("tts", INJECTED), c.Prompt("tts", "Hi\r\n\r\nsendmsg"), c.Prompt("tts", "a\x00b"),
    c.Prompt("tts", "${system(touch /tmp/pwned)}"), c.Prompt("tts", "$${hold_music}"),
    c.Prompt("file", "../../etc/passwd"), c.Prompt("file", "/etc/passwd"),
    c.Prompt("file", "http://169.254.169.254/latest/meta-data/x.wav"),
    c.Prompt("file", "shout://evil.example/x.mp3"), c.Prompt("file", "ivr/${x}"),
    c.Prompt("digits", "1\n\nsendmsg"),
])
def test_an_unsafe_prompt_is_refused_alone_and_the_play_goes_on(
    bad: c.Prompt, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Script([c.Play("p1", (bad, c.Prompt("file", "ivr/ok")))])
    driver, sent = make(flow)
    played = [(a, arg) for a, arg, _ in apps(sent) if a != "set"]
    assert played == [("playback", "ivr/ok.wav")]  # nothing else reached the wire
    assert [r.command for r in requests(sent)].count("sendmsg") == 1  # the playback
    assert refusals(caplog)
    driver.on_event(complete(apps(sent)[-1][2]))
    assert flow.seen == [c.PlayFinished("p1", "done")]
    flow = Script([c.Play("p2", (bad,))])
    make(flow)
    assert flow.seen == [c.PlayFinished("p2", "failed")]


def test_unsafe_set_transfer_dial_and_hangup_are_refused_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = Script([
        c.SetVariable("lang", "fr\n\nsendmsg\ncall-command: execute"),
        c.SetVariable("lang", "${system(id)}"),
        c.SetVariable("x=y", "z"),
        c.Transfer("1000 XML private"),
        c.Transfer("1000\n\nsendmsg"),
        c.Dial("1001,sofia/gateway/carrier/+900123"),
        c.Dial("1001\n"),
        c.SetVariable("lang", "fr"),
    ])
    driver, sent = make(flow)
    assert apps(sent) == []
    assert apis(sent) == ["uuid_setvar_multi uuid-1 lang=fr"]
    assert len(requests(sent)) == len(SETUP_COMMANDS) + 1  # the setup, then the one set
    assert flow.seen == [
        c.TransferResult("1000 XML private", ok=False, cause="refused: unsafe destination"),
        c.TransferResult("1000\n\nsendmsg", ok=False, cause="refused: unsafe destination"),
        c.DialResult("1001,sofia/gateway/carrier/+900123", "failed", "refused: unsafe target"),
        c.DialResult("1001\n", "failed", "refused: unsafe target"),
    ]
    assert len(refusals(caplog)) == 7
    assert not driver.handed_away
    flow.replies[c.Dtmf] = [c.Hangup("BUSY\n\nsendmsg")]
    driver.on_event(codec.LazyEvent({"Event-Name": "DTMF", "DTMF-Digit": "1"}))
    assert requests(sent)[-1].headers == {"call-command": "hangup",
                                          "hangup-cause": "NORMAL_CLEARING"}
    assert driver.handed_away


def test_the_codec_never_frames_a_value_with_a_line_break() -> None:
    for headers in ([("execute-app-arg", "a\n\nsendmsg")], [("x\n", "y")], [("a", "b\r")]):
        with pytest.raises(codec.UnsafeValue):
            codec.encode_command("sendmsg", headers)
    with pytest.raises(codec.UnsafeValue):
        codec.encode_command("api uuid_break x\n\nexit")
    assert codec.encode_command("sendmsg", [("a", "b c ☎")]) == "sendmsg\na: b c ☎\n\n".encode()


def test_the_operators_dial_template_may_use_freeswitch_variables() -> None:
    """Only the values a flow sends are checked, not the configured template around them."""
    sent: list[bytes] = []
    config = DriverConfig(dial_template="user/{target}@${{domain_name}}")  # str.format
    CallDriver(INFO, sent.extend, config).start(Script([c.Dial("1001")]))  # type: ignore[arg-type]
    assert apps(sent)[-1][1].endswith("}user/1001@${domain_name}")


def test_the_worker_runs_on_its_own_esl_code_without_greenswitch_or_dev_code() -> None:
    """The worker's modules load neither greenswitch (every method of it that mattered was
    overridden) nor anything from appserver.devkit (the codec's server half lives there)."""
    probe = ("import sys, appserver.freeswitch.worker, appserver.freeswitch.inbound\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'greenswitch'\n"
             "             or m.startswith('appserver.devkit')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_parked_call_is_driven_by_its_uuid_over_a_shared_connection() -> None:
    """Ingress park: every sendmsg names the call; no socket setup (the connection of all
    the node's calls is subscribed once), no per-call subscription for recordings."""
    flow = Script([c.Answer(), c.Play("p1", (c.Prompt("file", "ivr/welcome"),))])
    driver, sent = make(flow, address="uuid-1")
    assert {r.command for r in requests(sent)} == {
        "sendmsg uuid-1"}
    assert [r.headers.get("execute-app-name") for r in requests(sent)
            if r.command == "sendmsg uuid-1"] == ["answer", "playback"]
    sent.clear()
    driver._run([c.StartRecording("rec-1"), c.Hangup()])
    lines = [r.command for r in requests(sent)]
    assert not any(line.startswith("event") for line in lines)
    assert lines[-1] == "sendmsg uuid-1"
    assert requests(sent)[-1].headers["call-command"] == "hangup"
