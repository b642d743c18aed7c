"""The simulators' Signal: asyncio.Event's use, and a cheap wait on the first of several."""

from __future__ import annotations

import asyncio
import time

from appserver.devkit.sim.caller import Signal, first_of


async def test_first_of_wakes_on_any_signal_and_leaves_no_waiter() -> None:
    a, b = Signal(), Signal()
    waiting = asyncio.ensure_future(first_of((a, b), 5))
    await asyncio.sleep(0)
    assert not waiting.done()
    b.set()
    await asyncio.wait_for(waiting, 1)
    assert b.is_set() and not a.is_set()
    assert a._waiters == [] and b._waiters == []


async def test_first_of_times_out_and_returns_at_once_when_already_set() -> None:
    a = Signal()
    started = time.monotonic()
    await first_of((a,), 0.05)
    assert 0.04 <= time.monotonic() - started < 1 and a._waiters == []
    a.set()
    await asyncio.wait_for(first_of((a,), None), 0.1)
    a.clear()
    assert not a.is_set()


async def test_wait_until_set_and_a_cancelled_wait_is_forgotten() -> None:
    a = Signal()
    cancelled = asyncio.ensure_future(a.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert a._waiters == []
    waiting = asyncio.ensure_future(a.wait())
    await asyncio.sleep(0)
    a.set()
    await asyncio.wait_for(waiting, 1)
