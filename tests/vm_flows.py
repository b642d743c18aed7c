"""A menu with voicemail for engine end-to-end tests (test only): ``flow-factory vm_flows:factory``.

9997 -> menu "vm" (ivr/welcome): 1 -> voicemail "sales" (at most 5 s, no review),
2 -> voicemail "support" (review).
"""

from __future__ import annotations

from ivr.calls import CallFlow, CallInfo
from ivr.model import MailboxDef, MenuDef, OptionDef
from ivr.testing import build_menuset

MENUSET = build_menuset(
    [MenuDef("vm", greeting=("file:ivr/welcome",),
             options=(OptionDef("1", "voicemail", "sales"),
                      OptionDef("2", "voicemail", "support")))],
    extensions={"9997": ("menu", "vm")},
    mailboxes=[MailboxDef("sales", max_seconds=5), MailboxDef("support", review=True)],
)


def factory(call: CallInfo) -> CallFlow | None:
    return MENUSET.flow_for(call.called)
