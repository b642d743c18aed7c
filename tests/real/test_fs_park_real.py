"""Parked calls (``CALLYARD_FREESWITCH_INGRESS=park``) on the real FreeSWITCH 1.10.12.

The test's own context ``callyard-park`` is the shipped dialplan rendered with ingress
``park`` (``callyard render-config --var freeswitch_ingress=park``), loaded beside the
session's ``callyard`` context. Two workers serve it over their inbound connections: each
call is driven by exactly one of them, walks the menu, is transferred or hangs up, and gets
one CDR; a worker killed mid-call leaves its call parked, and the other worker's sweep takes
it (from the top) once the dead worker's heartbeat has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis
from conftest import FsWorkers
from engines import FreeswitchConf, render
from fs_probe import FreeswitchProbe
from stack import Process
from test_scenarios_real import cdrs_of

from appserver.devkit.embedded import free_port
from appserver.freeswitch.callrecords import HEARTBEAT_TTL_MS, PREFIX
from appserver.freeswitch.parked import SWEEP_SECONDS

CONTEXT = "callyard-park"
WELCOME = "file:ivr/welcome"


@pytest.fixture(scope="module")
def park_workers(freeswitch_engine: FreeswitchConf, freeswitch_workers: FsWorkers,
                 real_dir: os.PathLike[str]) -> Iterator[dict[str, Process]]:
    """The park context in the running engine, and two workers taking its calls, by their
    worker ids (as call records name their owners)."""
    rendered = render(freeswitch_engine.directory.parent / "fs-rendered-park", {
        "freeswitch_ingress": "park", "freeswitch_context": CONTEXT})
    source = rendered / "freeswitch-conf" / "conf" / "dialplan" / "callyard.xml"
    (freeswitch_engine.directory / "dialplan" / "callyard-park.xml").write_text(
        source.read_text())
    workers: dict[str, Process] = {}
    stack = freeswitch_workers.stack
    for name in ("park-1", "park-2"):
        port = free_port()
        process = stack.start(
            name, "freeswitch", ready_port=port, **{**freeswitch_workers.env,
            "CALLYARD_APPS": "flows:factory", "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{port}",
            "CALLYARD_FREESWITCH_ESL": freeswitch_workers.esl,
            "CALLYARD_HEALTH_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLYARD_FREESWITCH_INGRESS": "park", "CALLYARD_FREESWITCH_PARK_CONTEXT": CONTEXT})
        assert process.proc is not None
        workers[f"freeswitch-{socket.gethostname()}-{process.proc.pid}"] = process
    try:
        yield workers
    finally:
        for process in workers.values():
            process.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def parked(park_workers: dict[str, Process]) -> AsyncIterator[FreeswitchProbe]:
    probe = FreeswitchProbe(context=CONTEXT)
    await probe.start()
    assert "+OK" in await probe.api("reloadxml")
    await asyncio.sleep(1.0)  # the workers' connections subscribed
    try:
        yield probe
    finally:
        await probe.stop()


def owner(redis_url: str, call_id: str) -> str:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with contextlib.closing(client):
        return str(client.hget(f"{PREFIX}call:{call_id}", "owner") or "")


async def test_parked_calls_each_driven_by_one_worker(
    parked: FreeswitchProbe, real_database: str
) -> None:
    """Three calls at once: each hears the greeting once (two workers heard every park; one
    took each), walks the menu and gets one CDR; a transfer takes the call out of the park."""
    calls = [await parked.place_call("9999", caller=f"+1555091{i}") for i in range(3)]
    for call in calls:
        await call.wait_for_prompt(WELCOME, 15)
    await asyncio.sleep(2.0)
    assert [call.prompts().count(WELCOME) for call in calls] == [1, 1, 1]
    await calls[0].press("1")
    await calls[0].wait_for_prompt("file:ivr/sales", 15)
    await calls[0].hangup()
    await calls[1].press("0")  # the menu's transfer
    for call in calls[:2]:
        await call.wait_ended(20)
    await calls[2].hangup()
    await calls[2].wait_ended(20)
    dispositions = [[r["disposition"] for r in await cdrs_of(real_database, c.call_id, 15)]
                    for c in calls]
    assert dispositions == [["hangup"], ["transferred"], ["hangup"]]


async def test_a_dead_workers_parked_call_is_taken_by_the_other(
    parked: FreeswitchProbe, park_workers: dict[str, Process], real_database: str,
    real_redis_url: str,
) -> None:
    call = await parked.place_call("9999", caller="+15550920")
    await call.wait_for_prompt(WELCOME, 15)
    first = owner(real_redis_url, call.call_id)
    assert first in park_workers
    park_workers[first].kill()
    try:
        # its heartbeat runs out, then the next sweep sends the call back to the park
        await call.transcript.wait_for(lambda _: call.prompts().count(WELCOME) >= 2,
                                       HEARTBEAT_TTL_MS / 1000 + 3 * SWEEP_SECONDS)
        second = owner(real_redis_url, call.call_id)
        assert second in park_workers and second != first
        await call.press("1")
        await call.wait_for_prompt("file:ivr/sales", 15)
        await call.hangup()
        await call.wait_ended(20)
        rows = await cdrs_of(real_database, call.call_id, 15)
        assert [r["disposition"] for r in rows] == ["hangup"]
    except BaseException:
        for name, process in park_workers.items():
            print(f"--- {name}\n{process.output()[-4000:]}")
        raise
    finally:
        park_workers[first].start()
