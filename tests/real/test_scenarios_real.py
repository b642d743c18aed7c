"""The shared scenario list (tests/scenarios.py) on the real engines, transcribed from the
engines' own events (see fs_probe.py), with Callyard's real processes serving the calls."""

from __future__ import annotations

import pytest
from fs_probe import FreeswitchProbe
from scenarios import SCENARIOS, Scenario, run_scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario_on_freeswitch(freeswitch: FreeswitchProbe, scenario: Scenario) -> None:
    call = await run_scenario(freeswitch, scenario, time_scale=3)
    assert call.ended
