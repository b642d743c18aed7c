"""Writes on one ESL connection never interleave (appserver/freeswitch/connection.py).

A parked worker sends every call's commands over its one connection to the node, from many
greenlets, and FreeSWITCH reads that socket a byte per ``recv``: under load a write can find
the socket's buffer full. The greenlet whose write did not fit waits for room; a command
another greenlet writes meanwhile must go after the whole of it, not into its middle (the
node would read a broken command)."""

from __future__ import annotations

import socket

import gevent
import gevent.socket

from appserver.freeswitch.connection import EslConnection
from appserver.freeswitch.esl_codec import encode_command


def read_all(peer: gevent.socket.socket, size: int) -> bytes:
    """What the node reads, until ``size`` bytes or 2 s of nothing more."""
    data = b""
    while len(data) < size:
        with gevent.Timeout(2, False):
            chunk = peer.recv(65536)
            assert chunk, "the connection closed early"
            data += chunk
            continue
        break
    return data


def test_a_command_written_while_another_waits_for_room_goes_after_it_whole() -> None:
    node, ours = gevent.socket.socketpair()
    for sock, option in ((ours, socket.SO_SNDBUF), (node, socket.SO_RCVBUF)):
        sock.setsockopt(socket.SOL_SOCKET, option, 4096)
    conn = EslConnection(ours)
    big = encode_command("sendmsg big", [("call-command", "execute"),
                                         ("execute-app-arg", "x" * 400_000)])
    small = [encode_command(f"sendmsg small-{n}", [("call-command", "hangup")])
             for n in range(3)]

    first = gevent.spawn(conn.send_nowait, [big])
    gevent.sleep(0.01)  # the big write filled the buffer and waits for room
    assert not first.ready()
    others = [gevent.spawn(conn.send_nowait, [command]) for command in small]
    gevent.sleep(0.01)
    received = read_all(node, len(big) + sum(map(len, small)))
    gevent.joinall([first, *others], timeout=5, raise_error=True)

    assert received == big + b"".join(small)
    assert [g.value for g in (first, *others)] == [True] * 4
    assert conn._backlog is None  # the next write goes straight to the socket again
    conn.close()
    node.close()
