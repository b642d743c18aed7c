"""The engine scenarios (tests/scenarios.py) on their targets: both simulators, the real
FreeSWITCH and Asterisk (transcribed from the engines' own events, see fs_probe.py), and
FreeSWITCH's park ingress on the real engine and on the simulator, served by Callyard's real
processes with the IVR set of tests/ivr_menus.py in PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from conftest import PARK_TARGET, SIM_PARK_TARGET, TARGETS, time_scale
from scenarios import IVR_SCENARIOS, SCENARIOS, Scenario, run_scenario

from appserver.devkit.sim.caller import EngineSimulator

CASES = [
    pytest.param(target, scenario, id=f"{target}: {scenario.name}")
    for target in (*TARGETS, PARK_TARGET, SIM_PARK_TARGET)
    for scenario in SCENARIOS + IVR_SCENARIOS
    if target.split("-")[0] in scenario.engines
]


async def cdrs_of(database: str, call_id: str, wait: float) -> list[asyncpg.Record]:
    """The call's CDRs once the writer stored one (or none after ``wait`` seconds)."""
    conn = await asyncpg.connect(database)
    try:
        deadline = time.monotonic() + wait
        while True:
            rows = await conn.fetch("SELECT * FROM cdrs WHERE call_id = $1", call_id)
            if rows or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


@pytest.mark.parametrize(("target", "scenario"), CASES)
async def test_scenario(
    engine: EngineSimulator, target: str, scenario: Scenario, real_database: str
) -> None:
    call = await run_scenario(engine, scenario, time_scale=time_scale(target))
    assert call.ended
    rows = await cdrs_of(real_database, call.call_id, 15 if scenario.cdr else 1)
    assert [r["disposition"] for r in rows] == ([scenario.cdr] if scenario.cdr else [])
