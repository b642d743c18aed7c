"""Engine-neutral checks of the FreeSWITCH park ingress (``CALLYARD_FREESWITCH_INGRESS=park``)
with two workers serving one node: the same on the real FreeSWITCH
(tests/real/test_fs_park_real.py) and on the ESL simulator in park mode (tests/test_sim_park.py).
Each takes how to place a call, read a call's CDR dispositions (once written) and its owner
in Redis (and its queue entry), and how to kill a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection

from appserver.devkit.sim.caller import SimulatedCall
from appserver.freeswitch.callrecords import HEARTBEAT_SECONDS, HEARTBEAT_TTL_MS
from appserver.freeswitch.parked import SWEEP_SECONDS

WELCOME = "file:ivr/welcome"  # tests/flows.py's main menu (number 9999)

Place = Callable[[str, str], Awaitable[SimulatedCall]]  # (number, caller) -> the call
Dispositions = Callable[[str], Awaitable[list[str]]]  # call id -> its CDRs' dispositions
Owner = Callable[[str], Awaitable[str]]  # call id -> the worker id its record names
Entry = Callable[[str], Awaitable[dict[str, str]]]  # call id -> its queue entry ({}: none)
Kill = Callable[[str], Awaitable[None]]  # worker id -> (killed)

# Redis losing its data (a restart without it, a new replica) loses every key at once: run as
# ``EVAL LOSE_KEYS 0 <prefix>``. Deleted one by one, a sweep in between could find a call's
# record gone under an epoch not yet deleted, which no real loss shows.
LOSE_KEYS = """
local keys = redis.call('KEYS', ARGV[1] .. '*')
for i = 1, #keys, 1000 do
  redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
end
return #keys
"""


async def each_call_driven_by_one_worker(place: Place, dispositions: Dispositions,
                                         caller: str = "+1555091") -> None:
    """Three calls at once (every worker heard every park; one took each): each walks the
    menu and gets one CDR (a call two workers drove would get two); a transfer takes a call
    out of the park."""
    calls = [await place("9999", f"{caller}{i}") for i in range(3)]
    for call in calls:
        await call.wait_for_prompt(WELCOME, 15)
    await calls[2].hangup()
    await calls[1].press("0")  # the menu's transfer
    await calls[0].press("1")
    await calls[0].wait_for_prompt("file:ivr/sales", 15)
    await calls[0].hangup()
    for call in calls:
        await call.wait_ended(20)
    assert [await dispositions(c.call_id) for c in calls] == [
        ["hangup"], ["transferred"], ["hangup"]]


async def dead_workers_call_is_taken_by_the_other(
    place: Place, dispositions: Dispositions, owner: Owner, workers: Collection[str],
    kill: Kill, caller: str = "+15550920",
) -> str:
    """A call's worker is killed mid-menu: the call stays parked, the other worker's sweep
    sends it back to the park once the dead one's heartbeat ran out, and it is taken from
    the top (the menu heard again). The dead worker's id."""
    call = await place("9999", caller)
    await call.wait_for_prompt(WELCOME, 15)
    first = await owner(call.call_id)
    assert first in workers, (first, workers)
    await kill(first)
    # its heartbeat runs out, then the next sweep sends the call back to the park
    await call.transcript.wait_for(lambda _: call.prompts().count(WELCOME) >= 2,
                                   HEARTBEAT_TTL_MS / 1000 + 3 * SWEEP_SECONDS)
    second = await owner(call.call_id)
    assert second in workers and second != first, (first, second)
    await call.press("1")
    await call.wait_for_prompt("file:ivr/sales", 15)
    await call.hangup()
    await call.wait_ended(20)
    assert await dispositions(call.call_id) == ["hangup"]
    return first


async def dead_workers_queued_caller_is_taken_over(
    call: SimulatedCall, dispositions: Dispositions, owner: Owner, entry: Entry,
    workers: Collection[str], kill: Kill,
) -> tuple[str, str]:
    """``call`` waits in a queue (hearing hold music). Its worker is killed: the queue lease
    of its caller (15 s from the last renewal) must not run out before another worker takes
    the call. The dead worker's heartbeat runs out and the sweep that follows sends the call
    back to the park, where its new worker takes the queue entry over (same join time); the
    caller hears hold music again, not the menu, and leaves one CDR, ``abandoned``. The
    dead worker's id and the new one's."""
    first = await owner(call.call_id)
    before = await entry(call.call_id)
    assert first in workers and before.get("owner") == first, (first, before)
    await kill(first)
    died, heard = time.monotonic(), len(call.transcript.entries)
    deadline = died + HEARTBEAT_TTL_MS / 1000 + 2 * HEARTBEAT_SECONDS + 3
    while (now := await entry(call.call_id)).get("owner") in (first, None):
        assert now, "the queue entry was reaped: the caller lost their place"
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.2)
    print(f"taken over {time.monotonic() - died:.1f} s after the worker died")
    second = await owner(call.call_id)
    assert second in workers and second != first, (first, second)
    assert (now["owner"], now["taken_from"], now["joined"]) == (second, first, before["joined"])
    await call.transcript.wait_for(lambda e: e.kind == "moh", 10, start=heard)
    # well past the dead worker's lease: the entry is the new worker's, renewed
    await asyncio.sleep(max(0.0, died + 17 - time.monotonic()))
    assert (await entry(call.call_id)).get("owner") == second
    assert [e.detail for e in call.transcript.entries[heard:]
            if e.kind == "prompt_started" and "ivr/" in e.detail] == []
    await call.hangup()
    await call.wait_ended(20)
    assert await dispositions(call.call_id) == ["abandoned"]
    return first, second


async def lost_records_leave_a_live_workers_call_alone(
    call: SimulatedCall, dispositions: Dispositions, owner: Owner, workers: Collection[str],
    lose_records: Callable[[], Awaitable[None]],
) -> None:
    """``call`` waits in a queue (hearing hold music, as long as need be). Redis loses the
    call records (``lose_records``: their keys gone, as when Redis comes back without its
    data): the call now looks like no worker's, but it is its live worker's. No other
    worker's sweep may take it through the records' lifetime and a sweep after it; its
    worker writes its record again; the caller hears no menu and leaves one CDR."""
    first = await owner(call.call_id)
    assert first in workers, (first, workers)
    await lose_records()
    heard, restored = len(call.transcript.entries), False
    until = time.monotonic() + HEARTBEAT_TTL_MS / 1000 + SWEEP_SECONDS + 2
    while time.monotonic() < until:
        now = await owner(call.call_id)
        assert now in ("", first), f"the live worker's call was taken by {now}"
        restored = restored or now == first
        await asyncio.sleep(0.2)
    assert restored, "the live worker did not write its call's record again"
    assert [e.detail for e in call.transcript.entries[heard:]
            if e.kind == "prompt_started" and "ivr/" in e.detail] == []
    await call.hangup()
    await call.wait_ended(20)
    assert await dispositions(call.call_id) == ["abandoned"]


async def dead_workers_call_ending_unwatched_gets_one_cdr(
    call: SimulatedCall, dispositions: Dispositions, owner: Owner, workers: Collection[str],
    kill: Kill,
) -> None:
    """``call`` waits in a queue (hearing hold music). Its worker is killed and the caller
    hangs up at once, before another worker could take the call: a live worker's reaper
    finds, once the dead worker's heartbeat ran out, that the node no longer has the call
    (``uuid_exists``) and writes its one CDR, ``failed`` (``WORKER_LOST``); the record goes."""
    first = await owner(call.call_id)
    assert first in workers, (first, workers)
    await kill(first)
    await call.hangup()
    await call.wait_ended(20)
    assert await dispositions(call.call_id) == ["failed"]
    await asyncio.sleep(HEARTBEAT_SECONDS + 1)  # a round more: no second CDR
    assert await dispositions(call.call_id) == ["failed"]
    assert await owner(call.call_id) == ""
