"""One call, two sockets (appserver/freeswitch/worker.py): after a transfer FreeSWITCH may hand
the same call to a new socket while the old one still lingers. The old socket's end must not
take the newer socket's call out of the worker, nor release its record (``call_ended``):
only the socket that has the call lets it go."""

from __future__ import annotations

import gevent
import gevent.socket

from appserver.devkit.sim.esl.channel import encode_connect_reply
from appserver.devkit.sim.esl.server_codec import disconnect_notice
from appserver.freeswitch.worker import FreeswitchWorker
from ivr import calls as c

UUID = "6f0c1a52-0000-4000-8000-000000000001"
CHANNEL = [("Unique-ID", UUID), ("Channel-Name", "sofia/internal/1000"),
           ("Caller-Caller-ID-Number", "+15550100"), ("Caller-Destination-Number", "9999"),
           ("Caller-Context", "callyard"), ("Event-Name", "CHANNEL_DATA")]


class Silent(c.CallFlow):
    """A flow that answers and waits: it never ends the call itself."""

    def start(self, call: c.CallInfo) -> list[c.Command]:
        return [c.Answer()]

    def handle(self, event: c.Event) -> list[c.Command]:
        return []

    @property
    def done(self) -> bool:
        return False


def connect(worker: FreeswitchWorker) -> tuple[gevent.socket.socket, gevent.Greenlet]:
    """A socket from the "engine" to the worker, past the ``connect`` handshake."""
    engine, ours = gevent.socket.socketpair()
    handler = gevent.spawn(worker.handle_connection, ours, ("127.0.0.1", 1))
    received = b""
    with gevent.Timeout(5):
        while b"connect\n\n" not in received:
            received += engine.recv(4096)
    engine.sendall(encode_connect_reply(CHANNEL))
    return engine, handler


def until(condition: object, what: str) -> None:
    with gevent.Timeout(5, AssertionError(what)):
        while not condition():  # type: ignore[operator]
            gevent.sleep(0.01)


def test_an_older_sockets_end_leaves_the_newer_sockets_call() -> None:
    started: list[str] = []
    ended: list[str] = []
    worker = FreeswitchWorker(("127.0.0.1", 0), lambda info: Silent(),
                              call_started=lambda info: started.append(info.call_id),
                              call_ended=ended.append)
    old, old_handler = connect(worker)
    until(lambda: UUID in worker.calls, "the first socket's call started")
    first = worker.calls[UUID]
    # transferred: FreeSWITCH says the channel left this socket, which lingers open
    old.sendall(disconnect_notice(UUID, "disconnect"))
    new, new_handler = connect(worker)
    until(lambda: worker.calls.get(UUID) not in (None, first), "the new socket's call started")
    second = worker.calls[UUID]
    assert started == [UUID, UUID]

    old.close()  # the old socket's end
    old_handler.join(5)
    assert old_handler.dead
    assert worker.calls.get(UUID) is second and ended == []
    assert first.flow is None and second.flow is not None

    new.close()  # the call's own socket ends: now it goes, once
    new_handler.join(5)
    assert UUID not in worker.calls and ended == [UUID]
