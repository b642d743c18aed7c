"""Parked calls (``CALLYARD_FREESWITCH_INGRESS=park``) on the real FreeSWITCH 1.10.12.

The session's park context (conftest ``freeswitch_park``) is the shipped dialplan rendered
with ingress ``park`` (``callyard render-config --var freeswitch_ingress=park``), loaded beside
the ``callyard`` context; the call scenarios run on it too (target ``freeswitch-park``). Two
workers serve it over their inbound connections: each
call is driven by exactly one of them, walks the menu, is transferred or hangs up, and gets
one CDR; a worker killed mid-call leaves its call parked, and the other worker's sweep takes
it (from the top) once the dead worker's heartbeat has run out (those two checks are shared
with the ESL simulator's park mode: tests/park_checks.py, as are the next two); a queued
caller is taken over at their place, before the dead worker's queue lease could run out; a
dead worker's call that ends before anyone took it gets its one CDR from the other worker's
reaper; when Redis loses the call records, no worker takes a live worker's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import redis
from conftest import ParkWorkers
from fs_probe import FreeswitchProbe
from park_checks import (
    LOSE_KEYS,
    WELCOME,
    Dispositions,
    Kill,
    Owner,
    Place,
    dead_workers_call_ending_unwatched_gets_one_cdr,
    dead_workers_call_is_taken_by_the_other,
    dead_workers_queued_caller_is_taken_over,
    each_call_driven_by_one_worker,
    lost_records_leave_a_live_workers_call_alone,
)
from stack import Process
from test_scenarios_real import cdrs_of

from appserver.devkit.sim.caller import SimulatedCall
from appserver.freeswitch.callrecords import HEARTBEAT_SECONDS, HEARTBEAT_TTL_MS, PREFIX
from appserver.queues.model import KEY_PREFIX


def owner(redis_url: str, call_id: str) -> str:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with contextlib.closing(client):
        return str(client.hget(f"{PREFIX}call:{call_id}", "owner") or "")


def queue_entry(redis_url: str, call_id: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with contextlib.closing(client):
        return dict(client.hgetall(f"{KEY_PREFIX}call:{call_id}"))


@contextlib.contextmanager
def logs_on_failure(workers: dict[str, Process], marked: str = "") -> Iterator[None]:
    """Print the workers' logs (``marked`` one flagged) when the block fails."""
    try:
        yield
    except BaseException:
        for name, process in workers.items():
            flag = " (this one)" if name == marked else ""
            print(f"--- {name}{flag}\n{process.output()[-4000:]}")
        raise


def _place(probe: FreeswitchProbe) -> Place:
    async def place(number: str, caller: str) -> SimulatedCall:
        return await probe.place_call(number, caller=caller)

    return place


def _owner(redis_url: str) -> Owner:
    async def call_owner(call_id: str) -> str:
        return owner(redis_url, call_id)

    return call_owner


@contextlib.contextmanager
def _killing(park_workers: ParkWorkers) -> Iterator[Kill]:
    """How a check kills a park worker (SIGKILL); those it killed are restarted after it."""
    killed: list[str] = []

    async def kill(worker_id: str) -> None:
        park_workers.by_id[worker_id].kill()
        killed.append(worker_id)

    try:
        yield kill
    finally:
        for worker_id in killed:
            park_workers.restart(worker_id)


def _dispositions(database: str) -> Dispositions:
    async def dispositions(call_id: str) -> list[str]:
        return [r["disposition"] for r in await cdrs_of(database, call_id, 15)]

    return dispositions


async def test_parked_calls_each_driven_by_one_worker(
    freeswitch_park: FreeswitchProbe, real_database: str
) -> None:
    await each_call_driven_by_one_worker(_place(freeswitch_park), _dispositions(real_database))


async def test_a_dead_workers_parked_call_is_taken_by_the_other(
    freeswitch_park: FreeswitchProbe, freeswitch_park_workers: ParkWorkers, real_database: str,
    real_redis_url: str,
) -> None:
    workers = freeswitch_park_workers.by_id
    with _killing(freeswitch_park_workers) as kill, logs_on_failure(workers):
        await dead_workers_call_is_taken_by_the_other(
            _place(freeswitch_park), _dispositions(real_database), _owner(real_redis_url),
            workers, kill)


async def test_a_dead_workers_queued_caller_is_taken_over_at_their_place(
    freeswitch_park: FreeswitchProbe, freeswitch_park_workers: ParkWorkers, real_database: str,
    real_redis_url: str,
) -> None:
    """The shared check (tests/park_checks.py), in queue ``t-queue`` (extension 8110)."""
    workers = freeswitch_park_workers.by_id

    async def entry(call_id: str) -> dict[str, str]:
        return queue_entry(real_redis_url, call_id)

    call = await freeswitch_park.place_call("8110", caller="+15550921")
    await call.transcript.wait_for(lambda e: e.kind == "moh", 15)
    with _killing(freeswitch_park_workers) as kill, logs_on_failure(workers):
        await dead_workers_queued_caller_is_taken_over(
            call, _dispositions(real_database), _owner(real_redis_url), entry, workers, kill)
    rows = await cdrs_of(real_database, call.call_id, 15)
    assert [r["queue"] for r in rows] == ["t-queue"]


async def test_a_dead_workers_call_that_ends_unwatched_gets_one_cdr(
    freeswitch_park: FreeswitchProbe, freeswitch_park_workers: ParkWorkers, real_database: str,
    real_redis_url: str,
) -> None:
    """The shared check (tests/park_checks.py), in queue ``t-queue`` (extension 8110): the
    live worker asks the real node (``uuid_exists`` over its inbound link)."""
    workers = freeswitch_park_workers.by_id
    call = await freeswitch_park.place_call("8110", caller="+15550924")
    await call.transcript.wait_for(lambda e: e.kind == "moh", 15)
    with _killing(freeswitch_park_workers) as kill, logs_on_failure(workers):
        await dead_workers_call_ending_unwatched_gets_one_cdr(
            call, _dispositions(real_database), _owner(real_redis_url), workers, kill)
    rows = await cdrs_of(real_database, call.call_id, 15)
    assert [(r["disposition"], r["hangup_cause"]) for r in rows] == [("failed", "WORKER_LOST")]


async def test_lost_call_records_leave_a_live_workers_call_alone(
    freeswitch_park: FreeswitchProbe, freeswitch_park_workers: ParkWorkers, real_database: str,
    real_redis_url: str,
) -> None:
    """The shared check (tests/park_checks.py), in queue ``t-queue`` (extension 8110)."""
    workers = freeswitch_park_workers.by_id

    async def lose_records() -> None:
        client = redis.Redis.from_url(real_redis_url, decode_responses=True)
        with contextlib.closing(client):
            client.eval(LOSE_KEYS, 0, PREFIX)

    call = await freeswitch_park.place_call("8110", caller="+15550923")
    await call.transcript.wait_for(lambda e: e.kind == "moh", 15)
    with logs_on_failure(workers):
        await lost_records_leave_a_live_workers_call_alone(
            call, _dispositions(real_database), _owner(real_redis_url), workers, lose_records)


async def test_a_stalled_worker_sends_nothing_more_for_the_call_another_took(
    freeswitch_park: FreeswitchProbe, freeswitch_park_workers: ParkWorkers, real_database: str,
    real_redis_url: str,
) -> None:
    """A worker stalled past its heartbeat (SIGSTOP) is judged dead: the other worker's sweep
    takes its call back to the park, from the top. Resumed, the stalled worker's timers fire
    before it reads what happened meanwhile: it checks its calls are still its own before
    sending, lets this one go, and sends nothing more for it (each driver's commands carry
    its own Event-UUID prefix, which FreeSWITCH echoes as Application-UUID). One CDR."""
    workers = freeswitch_park_workers.by_id
    call = await freeswitch_park.place_call("9999", caller="+15550922")
    await call.wait_for_prompt(WELCOME, 15)
    first = owner(real_redis_url, call.call_id)
    stalled_driver = call.executed[-1].split("-")[0]
    process = workers[first]
    assert process.proc is not None
    process.proc.send_signal(signal.SIGSTOP)
    try:
        with logs_on_failure(workers, first):
            await call.transcript.wait_for(lambda _: call.prompts().count(WELCOME) >= 2,
                                           HEARTBEAT_TTL_MS / 1000 + 2 * HEARTBEAT_SECONDS + 5)
            assert owner(real_redis_url, call.call_id) not in ("", first)
            after = len(call.executed)
            process.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while "taken by another while it stalled" not in process.output() \
                    and "was parked again" not in process.output():
                assert time.monotonic() < deadline, "the stalled worker did not let the call go"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
            await call.press("1")
            await call.wait_for_prompt("file:ivr/sales", 15)
            await asyncio.sleep(1)
            drivers = {key.split("-")[0] for key in call.executed[after:] if key}
            assert stalled_driver not in drivers, call.transcript.lines()
            await call.hangup()
            await call.wait_ended(20)
            rows = await cdrs_of(real_database, call.call_id, 15)
            assert [r["disposition"] for r in rows] == ["hangup"]
    finally:
        process.proc.send_signal(signal.SIGCONT)
