"""A trial call into a menu draft on four targets (both simulators, the real FreeSWITCH and
Asterisk): the shipped dialplans route ``*99`` + 8 digits to the workers (trial calls are on
in this session), which walk the draft stored in Redis; key 1 enters its submenu. A trial
number that is not live is not served."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from conftest import TARGETS, time_scale

from appserver.devkit.sim.caller import EngineSimulator
from appserver.menus.trial_calls import store_trial
from ivr.model import MenuDef, MenuSource, OptionDef

DRAFT = MenuSource(menus=(
    MenuDef("trial-draft", greeting=("file:ivr/sales",), first_digit_timeout=20,
            options=(OptionDef("1", "submenu", "trial-next"),)),
    MenuDef("trial-next", greeting=("file:ivr/support",), first_digit_timeout=20),
))


@pytest.mark.parametrize("target", TARGETS)
async def test_a_trial_call_walks_the_draft(engine: EngineSimulator, target: str,
                                            real_redis_url: str) -> None:
    scale = time_scale(target)
    redis = aioredis.Redis.from_url(real_redis_url)
    try:
        trial = await store_trial(redis, DRAFT, "trial-draft")  # once the workers have it
    finally:
        await redis.aclose()
    assert trial.readers >= 1
    call = await engine.place_call(trial.number, caller="+15550777")
    await call.wait_for_prompt("file:ivr/sales", timeout=10 * scale)
    await call.press("1")
    await call.wait_for_prompt("file:ivr/support", timeout=10 * scale)
    await call.hangup()

    other = "*99" + ("1" if trial.number[3] == "0" else "0") + trial.number[4:]
    call = await engine.place_call(other, caller="+15550777")
    await call.transcript.wait_for(lambda e: e.kind == "hangup", timeout=15 * scale)
    assert "file:ivr/sales" not in call.prompts()
