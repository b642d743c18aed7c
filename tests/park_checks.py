"""Engine-neutral checks of the FreeSWITCH park ingress (``CALLYARD_FREESWITCH_INGRESS=park``)
with two workers serving one node: the same on the real FreeSWITCH
(tests/real/test_fs_park_real.py) and on the ESL simulator in park mode (tests/test_sim_park.py).
Each takes how to place a call, read a call's CDR dispositions (once written) and its owner
in Redis, and how to kill a worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from appserver.devkit.sim.caller import SimulatedCall
from appserver.freeswitch.callrecords import HEARTBEAT_TTL_MS
from appserver.freeswitch.parked import SWEEP_SECONDS

WELCOME = "file:ivr/welcome"  # tests/flows.py's main menu (number 9999)

Place = Callable[[str, str], Awaitable[SimulatedCall]]  # (number, caller) -> the call
Dispositions = Callable[[str], Awaitable[list[str]]]  # call id -> its CDRs' dispositions
Owner = Callable[[str], Awaitable[str]]  # call id -> the worker id its record names


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
    kill: Callable[[str], Awaitable[None]], caller: str = "+15550920",
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
