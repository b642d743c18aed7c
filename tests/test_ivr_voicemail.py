"""The ``voicemail`` action in the pure core: model, validation, compile, machine."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from appserver.cdr.flow import CdrFlow
from appserver.cdr.record import CdrRecord
from ivr.calls import (
    Command,
    Hangup,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    QueueResult,
    Record,
    RecordFinished,
    StopPlay,
)
from ivr.compile import MenuSet
from ivr.model import MailboxDef, MenuDef, OptionDef, ScheduleDef, target_problem
from ivr.testing import FlowHarness, build_menuset, default_call
from ivr.validate import MenuSetInvalid

BOX = MailboxDef("sales", max_seconds=30)
REVIEWED = MailboxDef("support", greeting=("file:demo/vm-support",), max_seconds=60, review=True)
MAIN = MenuDef(
    "main",
    greeting=("file:ivr/welcome",),
    options=(
        OptionDef("1", "voicemail", "sales"),
        OptionDef("2", "voicemail", "support"),
        OptionDef("3", "enqueue", "help"),
    ),
)


def _menuset() -> MenuSet:
    return build_menuset([MAIN], queues=["help"], mailboxes=[BOX, REVIEWED])


def _harness(menuset: MenuSet | None = None, **kw: object) -> FlowHarness:
    flow = (menuset or _menuset()).flow_for("9999")
    assert flow is not None
    h = FlowHarness(flow, **kw)  # type: ignore[arg-type]
    h.start()
    h.advance(1)
    return h


def after(h: FlowHarness, fn: Callable[[], object]) -> list[Command]:
    n = len(h.commands)
    fn()
    return h.commands[n:]


def assert_goodbye(h: FlowHarness, cmds: list[Command]) -> None:
    """"Saved, goodbye" and the end of the call went out together: the engine hangs up as
    the goodbye ends (``Hangup(after_play)``), with no PlayFinished round trip through the
    worker; the flow is done, and that PlayFinished (never delivered) would change nothing."""
    play, hangup = cmds[-2:]
    assert isinstance(play, Play)
    assert play == Play(play.play_id, (Prompt("file", "voicemail/saved"),), "", "en")
    assert hangup == Hangup(after_play=play.play_id) == h.terminal
    assert h.flow.done
    assert h.flow.handle(PlayFinished(play.play_id, "done")) == []


def test_voicemail_records_until_hash_then_says_goodbye() -> None:
    h = _harness()
    h.press("1")
    h.advance(1)  # the standard greeting plays out
    assert h.played[-1] == "file:voicemail/greeting"
    record = h.commands[-1]
    assert record == Record("vm:voicemail-sales-test-call", "voicemail-sales-test-call", 30,
                            True, "#", "sales")
    h.advance(2)
    cmds = after(h, lambda: h.press("#"))  # the engine ends the take on # at once
    assert h.recordings == [(record, 2.0)]
    assert_goodbye(h, cmds)
    assert h.played[-1] == "file:voicemail/saved"
    assert h.variables["ivr_voicemail"] == "sales"


def test_voicemail_ends_at_the_mailbox_limit() -> None:
    h = _harness(record_seconds=1000)
    h.press("1")
    h.run()
    assert [seconds for _, seconds in h.recordings] == [30]
    assert h.played[-1] == "file:voicemail/saved"
    assert_goodbye(h, h.commands)


def test_caller_hanging_up_during_the_goodbye_ends_the_flow_quietly() -> None:
    h = _harness()
    h.press("1")
    h.advance(3)
    h.press("#")
    assert isinstance(h.terminal, Hangup) and h.terminal.after_play
    assert h.flow.handle(HungUp("NORMAL_CLEARING")) == [] and h.flow.done


def _message_then_hangup(goodbye_seconds: float) -> tuple[CdrRecord, float]:
    """A 2 s message, then the call's HungUp ``goodbye_seconds`` into the goodbye: its CDR
    and when the call ended."""
    out: list[CdrRecord] = []
    inner = _menuset().flow_for("9999")
    assert inner is not None
    h = FlowHarness(CdrFlow(inner, default_call(), out.append, clock=lambda: h.now))
    h.start()
    h.advance(1)
    h.press("1")
    h.advance(3)  # the greeting, then 2 s of message
    h.press("#")
    assert isinstance(h.terminal, Hangup) and h.terminal.after_play and out == []
    h.advance(goodbye_seconds)
    h.hangup()
    [record] = out
    return record, h.now


def test_the_message_is_filed_when_the_call_ends_behind_the_goodbye() -> None:
    """The CDR closes when the engine has hung up behind the goodbye (the call's HungUp),
    not when the flow asked; a voicemail with the message, as when the caller hangs up
    during the goodbye."""
    for goodbye_seconds in (1.0, 0.4):  # played out; the caller left during it
        r, ended = _message_then_hangup(goodbye_seconds)
        assert (r.disposition, r.hangup_cause, r.ended_at) == ("voicemail", "NORMAL_CLEARING",
                                                               ended)
        assert r.extra["voicemail"]["seconds"] == 2.0


def test_caller_hanging_up_mid_message_ends_the_flow_quietly() -> None:
    h = _harness(record_seconds=1000)
    h.press("1")
    h.advance(5)
    assert isinstance(h.commands[-1], Record)
    h.hangup()
    assert h.flow.done
    assert h.recordings == []  # no RecordFinished: only HungUp, as from a driver


def test_hash_skips_the_greeting() -> None:
    h = _harness()
    h.press("2")
    h.press("#")
    assert isinstance(h.commands[-1], Record)
    assert h.played[-1] == "file:demo/vm-support"


def test_review_two_records_again_one_keeps() -> None:
    h = _harness()
    h.press("2")
    h.advance(1)
    h.press("#")  # ends the first take at once
    h.advance(1)
    assert h.played[-1] == "file:voicemail/review"
    h.press("2")
    assert isinstance(h.commands[-1], Record)
    h.advance(1)
    h.press("#")
    h.advance(0.5)  # during the review prompt
    review = h.commands[-1]
    assert isinstance(review, Play)
    cmds = after(h, lambda: h.press("1"))
    assert cmds[0] == StopPlay(review.play_id)
    assert_goodbye(h, cmds)
    assert h.played[-1] == "file:voicemail/saved"
    assert len(h.recordings) == 2


def test_review_without_a_key_keeps_the_message() -> None:
    h = _harness()
    h.press("2")
    h.run()
    assert h.played[-2:] == ["file:voicemail/review", "file:voicemail/saved"]
    assert_goodbye(h, h.commands)


def test_failed_recording_ends_the_call() -> None:
    h = _harness()
    h.press("1")
    h.advance(1)
    record = h.commands[-1]
    assert isinstance(record, Record)
    h.send(RecordFinished(record.record_id, "failed"))
    assert h.terminal == Hangup("NORMAL_TEMPORARY_FAILURE")


def test_queue_overflow_to_voicemail() -> None:
    h = _harness(queue_outcome=lambda e: None)
    h.press("3")
    h.send_result(QueueResult("help", "overflow", "voicemail:support"))
    h.advance(1)
    assert h.played[-1] == "file:demo/vm-support"
    assert isinstance(h.commands[-1], Record)


def test_closed_menu_sends_callers_to_voicemail() -> None:
    closed = ScheduleDef("never", "UTC")
    menu = MenuDef("main", greeting=("file:ivr/welcome",), schedule="never",
                   closed_action="voicemail", closed_target="sales")
    h = _harness(build_menuset([menu], schedules=[closed], mailboxes=[BOX]))
    assert "file:ivr/welcome" not in h.played
    assert h.played == ["file:voicemail/greeting"]


def test_validation_names_an_unknown_mailbox_and_bad_limits() -> None:
    with pytest.raises(MenuSetInvalid) as exc:
        build_menuset([MAIN], queues=["help"],
                      mailboxes=[MailboxDef("sales", max_seconds=4)])
    text = str(exc.value)
    assert "voicemail target mailbox 'support' does not exist (known: sales)" in text
    assert "mailbox 'sales' max_seconds 4 must be a whole number from 5 to 600s" in text
    assert target_problem("voicemail", "Bad Box") is not None
    assert target_problem("voicemail", "sales") is None


def test_mailboxes_survive_the_published_json() -> None:
    menuset = _menuset()
    loaded = MenuSet.from_json(menuset.to_json())
    assert loaded.mailboxes == menuset.mailboxes
    assert loaded.mailboxes["support"].review is True
