"""The ``voicemail`` action in the pure core: model, validation, compile, machine."""

from __future__ import annotations

import pytest

from ivr.calls import Hangup, QueueResult, Record, RecordFinished
from ivr.compile import MenuSet
from ivr.model import MailboxDef, MenuDef, OptionDef, ScheduleDef, target_problem
from ivr.testing import FlowHarness, build_menuset
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


def test_voicemail_records_until_hash_then_says_goodbye() -> None:
    h = _harness()
    h.press("1")
    h.advance(1)  # the standard greeting plays out
    assert h.played[-1] == "file:voicemail/greeting"
    record = h.commands[-1]
    assert record == Record("vm:voicemail-sales-test-call", "voicemail-sales-test-call", 30,
                            True, "#", "sales")
    h.advance(2)
    h.press("#")
    h.advance(1)
    assert h.recordings == [(record, 2.0)]
    assert h.played[-1] == "file:voicemail/saved"
    assert h.run() == Hangup()
    assert h.variables["ivr_voicemail"] == "sales"


def test_voicemail_ends_at_the_mailbox_limit() -> None:
    h = _harness(record_seconds=1000)
    h.press("1")
    h.run()
    assert [seconds for _, seconds in h.recordings] == [30]
    assert h.played[-1] == "file:voicemail/saved"
    assert isinstance(h.terminal, Hangup)


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
    h.press("1")
    h.advance(1)
    assert h.played[-1] == "file:voicemail/saved"
    assert len(h.recordings) == 2
    assert h.run() == Hangup()


def test_review_without_a_key_keeps_the_message() -> None:
    h = _harness()
    h.press("2")
    h.run()
    assert h.played[-2:] == ["file:voicemail/review", "file:voicemail/saved"]
    assert isinstance(h.terminal, Hangup)


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
