"""Subprocess helper for test_freeswitch_inbound.py: drives NodeLink/NodeConnection (gevent)
against the ESL simulator and reports each step as a JSON line on stdout."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from appserver.freeswitch.connection import NodeConnection  # noqa: E402
from appserver.freeswitch.inbound import NodeLink, NodeManager, NodeUnavailable  # noqa: E402
from appserver.settings import EslNode  # noqa: E402


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def wait(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        gevent.sleep(0.05)
    return False


def main(port: int) -> None:
    events: list[tuple[str, str]] = []
    link = NodeLink(
        EslNode(host="127.0.0.1", port=port, password="ClueCon"),
        events=("BACKGROUND_JOB", "CHANNEL_HANGUP"),
        on_event=lambda node, ev: events.append((ev.name, ev.body)),
        min_backoff=0.1,
        max_backoff=0.4,
    )
    link.start()
    gevent.sleep(0.6)
    try:
        link.api("status")
        unavailable = ""
    except NodeUnavailable as exc:
        unavailable = str(exc)
    say(step="down", connected=link.connected.is_set(), error=link.last_error, api=unavailable)
    say(step="up", ok=link.connected.wait(10))
    # greenswitch 0.0.19 dies on "event json"; ours keeps working afterwards
    raw = NodeConnection.open("127.0.0.1", port, "ClueCon")
    json_reply = raw.send("event json ALL").data
    job_bodies: list[str] = []
    raw.event_callback = lambda ev: (
        job_bodies.append(ev.body) if ev.name == "BACKGROUND_JOB" else None
    )
    raw.send("bgapi status")
    wait(lambda: job_bodies, 5)
    after_json = raw.send("api status").data
    raw.close()
    try:
        NodeConnection.open("127.0.0.1", port, "wrong")
        bad_auth = "accepted"
    except Exception as exc:
        bad_auth = type(exc).__name__
    uuid = link.originate("loopback/9999/default", origination_caller_id_number="5551234")
    with socket.socket() as free:  # a node nobody listens on
        free.bind(("127.0.0.1", 0))
        down_port = free.getsockname()[1]
    nodes = NodeManager([EslNode(host="127.0.0.1", port=p, password="ClueCon")
                         for p in (port, down_port)])
    nodes.start()
    up, down = (f"127.0.0.1:{p}" for p in (port, down_port))
    nodes.links[up].connected.wait(10)
    calls_exist = nodes.calls_exist([(uuid, ""), ("no-such-uuid", ""), (uuid, up),
                                     ("no-such-uuid", up), (uuid, nodes.links[up].hostname),
                                     (uuid, down), (uuid, "elsewhere")])
    nodes.stop()
    say(
        step="checks",
        json_reply=json_reply,
        job_body=job_bodies[:1],
        after_json=after_json.splitlines()[0] if after_json else "",
        bad_auth=bad_auth,
        bgapi=link.bgapi("status").splitlines()[0],
        originated=uuid,
        exists=link.api(f"uuid_exists {uuid}"),
        api_many=link.api_many([f"uuid_exists {uuid}", "uuid_exists no-such-uuid", "status"]),
        api_many_batches=sorted(set(link.api_many([f"uuid_exists {uuid}"] * 250))),
        calls_exist=calls_exist,
        broadcast=link.uuid_broadcast(uuid, "ivr/hold.wav"),
        transfer_missing=link.uuid_transfer("no-such-uuid", "1000"),
        kill=link.api(f"uuid_kill {uuid}"),
        hostname=link.hostname,
    )
    wait(lambda: any(name == "CHANNEL_HANGUP" for name, _ in events), 5)
    say(step="events", names=sorted({name for name, _ in events}))
    say(step="lost", ok=wait(lambda: not link.connected.is_set(), 10))
    say(step="reconnected", ok=link.connected.wait(10), connects=link.connects)
    link.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
