"""The Asterisk worker dying, frozen or cut off, and Asterisk restarting, on the real Asterisk
22.10.1: a restarted worker re-adopts the calls in progress, new calls are served, and every
call gets exactly one CDR (stored by the session's ``cdr-writer``).

What was found here (2026-12-03) about the reported "Asterisk stopped registering Stasis
applications after ARI event WebSockets were closed abruptly": a worker killed (SIGKILL),
frozen (SIGSTOP) then killed, or cut off (its sockets aborted with ``ss -K``) did not leave
Asterisk unable to register the application. What did is running out of HTTP sessions:
Asterisk serves every HTTP connection with a thread and refuses new ones beyond ``sessionlimit``
(default 100, "HTTP session count exceeded 100 sessions"), the events WebSocket included, while
a worker alone may hold 100 connections for REST requests plus its events socket, and requests
waiting for their channel keep their session after the worker died. The shipped http.conf
raises the limit (``asterisk_http_session_limit``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest
from ast_probe import AsteriskProbe, RealAstCall
from asterisk_fixtures import AsteriskWorker, RealAsterisk
from test_scenarios_real import cdrs_of

WAIT = 15.0  # seconds for anything the engine or the worker does (2 shared cores)


async def in_sales_menu(probe: AsteriskProbe) -> RealAstCall:
    """A call that has walked to the sales menu of the test flow (tests/flows.py)."""
    call = await probe.place_call("9999")
    await call.wait_for_prompt("file:ivr/welcome", WAIT)
    await call.press("1")
    await call.wait_for_prompt("file:ivr/sales", WAIT)
    return call


async def prompt_after(call: RealAstCall, prompt: str, mark: int) -> None:
    """``prompt`` starts again after the first ``mark`` transcript entries."""
    await call.transcript.wait_for(
        lambda e: e.kind == "prompt_started" and e.detail == prompt, WAIT, start=mark)


async def is_served(probe: AsteriskProbe) -> RealAstCall:
    """A new call hears the menu and can leave it (transfer), as any caller would."""
    call = await probe.place_call("9999")
    await call.wait_for_prompt("file:ivr/welcome", WAIT)
    await call.press("0")
    await call.transcript.wait_for(lambda e: e.kind == "transferred", WAIT)
    await call.wait_ended(WAIT)
    return call


async def one_cdr_each(database: str, *calls: RealAstCall) -> None:
    for i, call in enumerate(calls):
        rows = await cdrs_of(database, call.call_id, WAIT)
        assert len(rows) == 1, (i, call.call_id, call.transcript.lines(), rows)


def worker_sockets(pid: int) -> list[int]:
    """Local ports of the worker's TCP connections to ARI (127.0.0.1:8088)."""
    out = subprocess.run(["ss", "-tnpH", "( dport = :8088 )"], capture_output=True,
                         text=True, check=True).stdout
    return [int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
            if (m := re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:8088", line))]


@pytest.fixture
def held_sessions() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


async def test_worker_killed_mid_call_readopts_it(
    asterisk: AsteriskProbe, asterisk_worker: AsteriskWorker, real_database: str
) -> None:
    """SIGKILL: Asterisk sees the sockets close, keeps the channel in Stasis; the next worker
    re-adopts it (its flow starts again from the top) and serves new calls."""
    call = await in_sales_menu(asterisk)
    asterisk_worker.kill()
    mark = len(call.transcript.entries)
    await asterisk_worker.start()
    await prompt_after(call, "file:ivr/welcome", mark)
    await call.press("1")
    await prompt_after(call, "file:ivr/sales", mark)
    await call.press("1")
    await call.transcript.wait_for(lambda e: e.kind == "bridged", WAIT)
    await call.wait_ended(WAIT)
    await one_cdr_each(real_database, call, await is_served(asterisk))


async def test_worker_cut_off_reconnects_and_keeps_its_calls(
    asterisk: AsteriskProbe, asterisk_worker: AsteriskWorker, real_database: str
) -> None:
    """Every ARI connection of the worker aborted (``ss -K``, as a network cut ends): the
    worker reconnects and the call goes on in the same flow (no restart from the top)."""
    call = await in_sales_menu(asterisk)
    ports = worker_sockets(asterisk_worker.pid)
    assert ports, "the worker has no ARI connection"
    for port in ports:
        subprocess.run(["ss", "-K", "-tn", f"( sport = :{port} and dport = :8088 )"],
                       capture_output=True, check=True)
    await asyncio.sleep(1.5)  # the worker's reconnect (0.5 s) and re-reading of its calls
    await call.press("3")  # sales -> sales-deep: the flow in memory carries on
    await call.wait_for_prompt("file:ivr/sales-deep", WAIT)
    await call.press("#")
    await call.wait_ended(WAIT)
    assert "prompt_started file:ivr/welcome" not in call.transcript.lines()[4:]
    assert asterisk_worker.running
    await one_cdr_each(real_database, call, await is_served(asterisk))


async def test_frozen_worker_resumes_or_is_replaced(
    asterisk: AsteriskProbe, asterisk_worker: AsteriskWorker, real_database: str
) -> None:
    """SIGSTOP (a frozen process): calls arriving meanwhile wait in Stasis. Resumed, the
    worker serves them; killed and replaced instead, the next worker adopts them."""
    os.kill(asterisk_worker.pid, signal.SIGSTOP)
    waiting = await asterisk.place_call("9999")
    await asyncio.sleep(2)
    os.kill(asterisk_worker.pid, signal.SIGCONT)
    await waiting.wait_for_prompt("file:ivr/welcome", WAIT)
    await waiting.hangup()
    os.kill(asterisk_worker.pid, signal.SIGSTOP)
    adopted = await asterisk.place_call("9999")
    await asyncio.sleep(2)
    asterisk_worker.kill()  # a supervisor replacing a worker that stopped answering
    await asterisk_worker.start()
    await adopted.wait_for_prompt("file:ivr/welcome", WAIT)
    await adopted.hangup()
    await asyncio.gather(waiting.wait_ended(WAIT), adopted.wait_ended(WAIT))
    await one_cdr_each(real_database, waiting, adopted, await is_served(asterisk))


async def test_asterisk_restart_worker_reconnects(
    asterisk: AsteriskProbe, asterisk_worker: AsteriskWorker, asterisk_engine: RealAsterisk,
    real_database: str,
) -> None:
    """Asterisk restarted under a call: the worker reconnects by itself and serves new calls;
    the call that died with Asterisk still gets its one CDR."""
    call = await in_sales_menu(asterisk)
    asterisk_engine.restart()
    # the worker's backoff (0.5 s doubling) and the probe's own events socket (it must be back
    # before a call is placed, or the call's first events are lost)
    for _ in range(int(2 * WAIT / 0.25)):
        if await asterisk.app_registered("callyard") and await asterisk.app_registered(
                asterisk.app):
            break
        await asyncio.sleep(0.25)
    assert asterisk_worker.running
    await one_cdr_each(real_database, call, await is_served(asterisk))


async def test_events_socket_opens_while_other_sessions_hold_asterisk(
    asterisk: AsteriskProbe, asterisk_worker: AsteriskWorker, real_database: str,
    held_sessions: list[socket.socket],
) -> None:
    """150 other HTTP connections (stuck requests of a dead worker, other ARI clients): a
    restarted worker still opens its events socket. Asterisk's default sessionlimit (100)
    refused it: the application was never registered again."""
    held_sessions.extend(socket.create_connection(("127.0.0.1", 8088)) for _ in range(150))
    asterisk_worker.kill()
    await asterisk_worker.start()
    await one_cdr_each(real_database, await is_served(asterisk))
