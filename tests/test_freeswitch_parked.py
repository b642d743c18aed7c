"""The pure parts of the park ingress (appserver/freeswitch/parked.py): which calls a sweep
looks at, and a parked call's channel data from its CHANNEL_PARK (the rest runs on the real
FreeSWITCH: tests/real/test_fs_park_real.py)."""

from __future__ import annotations

import json

from appserver.freeswitch import esl_codec as codec
from appserver.freeswitch.driver import call_info_from
from appserver.freeswitch.parked import channel_data, parked_calls


def test_parked_calls_lists_the_contexts_calls_from_show_channels() -> None:
    rows = [
        {"uuid": "a", "context": "callyard", "application": "park", "dest": "9999"},
        {"uuid": "b", "context": "callyard", "application": "bridge", "dest": "8100"},
        {"uuid": "c", "context": "default", "application": "park", "dest": "9999"},
        {"uuid": "", "context": "callyard", "application": "park", "dest": "9999"},
        {"uuid": "d", "context": "callyard", "application": "", "dest": ""},
    ]
    listing = json.dumps({"row_count": len(rows), "rows": rows})
    assert [(r["uuid"], r["application"], r["dest"]) for r in parked_calls(listing, "callyard")
            ] == [("a", "park", "9999"), ("b", "bridge", "8100")]
    assert parked_calls('{"row_count":0}', "callyard") == []  # FreeSWITCH's "no calls"
    assert parked_calls("", "callyard") == []


def test_channel_data_of_a_park_event_gives_the_calls_info() -> None:
    head = ("Event-Name: CHANNEL_PARK\nUnique-ID: u-1\nCaller-Caller-ID-Number: %2B15550100\n"
            "Caller-Destination-Number: 9999\nCaller-Context: callyard\n"
            "variable_callyard_ingress: park\nvariable_language: fr\n"
            "variable_language: de\n")
    frame = codec.Frame({"Content-Type": "text/event-plain"}, head.encode())
    data = channel_data(codec.parse_event_lazy(frame))
    assert data["Caller-Caller-ID-Number"] == "+15550100"
    info = call_info_from(data, "fs1")
    assert (info.call_id, info.caller, info.called, info.node) == ("u-1", "+15550100", "9999",
                                                                   "fs1")
    assert info.variables == {"callyard_ingress": "park", "language": "fr"}  # first wins


def test_ingress_park_without_nodes_is_refused_at_start() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(CALLYARD_FREESWITCH_INGRESS="park", CALLYARD_REDIS_URL="redis://127.0.0.1:1/0")
    result = subprocess.run([sys.executable, "-m", "appserver.cli", "freeswitch"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "CALLYARD_FREESWITCH_ESL" in result.stderr
