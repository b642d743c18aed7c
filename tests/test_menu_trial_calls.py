"""Trial calls into menu drafts: the API stores a trial set under a trial number, readers
with trials on load it (published, or already there when they subscribe) and serve that
number from it until it expires; readers without trials, and the live numbers, never see it."""

from __future__ import annotations

import asyncio
import time

import pytest
from api_support import api_app
from test_api_menu_drafts import MAIN, _seed

from appserver.menus.readers import MenuSetReader
from appserver.menus.trial_calls import (
    TRIALS,
    TrialCall,
    is_trial_number,
    loaded_key,
    store_trial,
    trial_key,
)
from ivr.model import MenuDef, MenuSource

DRAFT = MenuSource(menus=(MenuDef("draft", greeting=("tts:Draft hello",)),))


async def _until(check, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("number,ok", [("*9912345678", True), ("*991234567", False),
                                       ("*99123456789", False), ("9999", False),
                                       ("*98123456789", False), ("*99abcdefgh", False)])
def test_trial_numbers(number: str, ok: bool) -> None:
    assert is_trial_number(number) is ok


async def test_readers_load_trials_published_or_already_stored(redis_client) -> None:
    before = await store_trial(redis_client, DRAFT, "draft")  # before the reader subscribes
    reader = MenuSetReader(redis_client, trials=True)
    plain = MenuSetReader(redis_client)
    await reader.start()
    await plain.start()
    try:
        await _until(lambda: before.number in reader.trials)
        after = await store_trial(redis_client, DRAFT, "draft")
        assert is_trial_number(after.number) and after.number != before.number
        await _until(lambda: after.number in reader.trials)
        assert reader.flow_for(after.number) is not None
        assert reader.flow_for("9999") is None  # the trial set serves its number only
        assert plain.flow_for(after.number) is None and plain.trials == {}
        ttl = await redis_client.ttl(trial_key(after.number))
        assert 1700 < ttl <= 1800
        # Expired: no longer served, forgotten.
        menuset, _ = reader.trials[after.number]
        reader.trials[after.number] = (menuset, time.time() - 1)
        assert reader.flow_for(after.number) is None and after.number not in reader.trials
    finally:
        await reader.stop()
        await plain.stop()


async def test_a_trial_gone_from_redis_is_not_loaded(redis_client) -> None:
    trial = await store_trial(redis_client, DRAFT, "draft")
    await redis_client.delete(trial_key(trial.number))
    reader = MenuSetReader(redis_client, trials=True)
    await reader.start()
    try:
        await reader.load_trials()
        assert reader.trials == {}
        await redis_client.set(trial_key(trial.number), "{not json")
        await reader.load_trial(trial.number)  # unreadable: logged, not served
        assert reader.trials == {}
    finally:
        await reader.stop()


async def test_a_reader_counts_itself_once_in_a_trial_both_found_and_published(
        redis_client, monkeypatch) -> None:
    """Finding: stored between a reader's SUBSCRIBE and its look at the stored trials, a
    trial reached the reader twice (found stored, then its PUBLISH) and the reader counted
    itself twice in the trial's ``loaded``: the API stopped waiting (loaded = the readers
    the PUBLISH reached) before another reader had loaded it."""
    reader = MenuSetReader(redis_client, trials=True)
    stored: list[TrialCall] = []
    load_trials = reader.load_trials

    async def store_then_load() -> None:  # subscribed: the PUBLISH reaches this reader
        if not stored:
            stored.append(await store_trial(redis_client, DRAFT, "draft", wait=0))
        await load_trials()

    monkeypatch.setattr(reader, "load_trials", store_then_load)
    await reader.start()
    try:
        await _until(lambda: bool(stored) and stored[0].number in reader.trials)
        # The news of a later trial comes after the first one's: that one was read.
        later = await store_trial(redis_client, DRAFT, "draft")
        assert later.readers == 1
        assert await redis_client.get(loaded_key(stored[0].number)) == "1"
    finally:
        await reader.stop()


async def _trial_subscribers(redis_client) -> int:
    """Connections subscribed to the trials channel (the server is shared with other
    tests' readers)."""
    [(_, n)] = await redis_client.pubsub_numsub(TRIALS)
    return int(n)


UNSAVED = {"main": {**MAIN, "greeting": ["tts:Draft hello"]}}


async def test_no_trial_numbers_while_trial_calls_are_off(pg_pool, redis_client) -> None:
    async with api_app(pg_pool, redis_client) as api, api.client(api.admin_key) as c:
        await _seed(c)
        r = await c.post("/api/menu-drafts/trial-calls", json={"menu": "main", "menus": UNSAVED})
        assert r.status_code == 409 and "CALLYARD_MENU_TRIALS" in r.text
        assert await redis_client.zcard(TRIALS) == 0


async def test_the_api_makes_trial_numbers_of_valid_drafts(pg_pool, redis_client) -> None:
    unsaved = UNSAVED
    async with api_app(pg_pool, redis_client, menu_trials=True) as api, \
            api.client(api.admin_key) as c:
        await _seed(c)
        # No worker follows trial calls: the number would not be answered.
        r = await c.post("/api/menu-drafts/trial-calls", json={"menu": "main", "menus": unsaved})
        assert r.status_code == 503 and "CALLYARD_MENU_TRIALS" in r.text
        following = await _trial_subscribers(redis_client)
        readers = [MenuSetReader(redis_client, trials=True) for _ in range(2)]
        for reader in readers:
            await reader.start()
        try:
            # start() returns before the reader has subscribed: the API waits for the
            # readers its PUBLISH reaches, so post once both follow trials.
            deadline = time.monotonic() + 3.0
            while await _trial_subscribers(redis_client) < following + 2:
                assert time.monotonic() < deadline, "the readers did not subscribe"
                await asyncio.sleep(0.01)
            r = await c.post("/api/menu-drafts/trial-calls",
                             json={"menu": "main", "menus": unsaved})
            assert r.status_code == 201, r.text
            number = r.json()["number"]
            assert r.json()["menu"] == "main" and is_trial_number(number)
            assert r.json()["workers"] == 2
            # Answered once both readers have it: the first call finds it everywhere.
            assert all(reader.flow_for(number) is not None for reader in readers)
            assert await redis_client.zscore(TRIALS, number) is not None
        finally:
            for reader in readers:
                await reader.stop()
        bad = {"main": {**MAIN, "options": [{"digits": "1", "action": "submenu",
                                             "target": "ghost"}]}}
        r = await c.post("/api/menu-drafts/trial-calls", json={"menu": "main", "menus": bad})
        assert r.status_code == 422 and "ghost" in r.json()["detail"]["message"]
        r = await c.post("/api/menu-drafts/trial-calls", json={"menu": "nope"})
        assert r.status_code == 404
        async with api.client() as anon:  # (roles: tests/test_api_auth.py)
            r = await anon.post("/api/menu-drafts/trial-calls", json={"menu": "main"})
            assert r.status_code == 401


@pytest.mark.parametrize("turns", [1, 2, 3, 6])
async def test_a_reader_stopped_at_once_stops_and_unsubscribes(redis_client, turns: int
                                                               ) -> None:
    """Finding: stopped while its SUBSCRIBE was in flight, a reader's task swallowed the
    cancellation (inside redis-py): stop() waited its 5 s and the task went on, subscribed."""
    async def subscribers() -> list[int]:  # (the server is shared with other tests' readers)
        return [n for _, n in await redis_client.pubsub_numsub(TRIALS, "callyard:menus")]

    before = await subscribers()
    reader = MenuSetReader(redis_client, trials=True)
    await reader.start()
    for _ in range(turns):
        await asyncio.sleep(0)
    started = time.monotonic()
    await reader.stop()
    assert time.monotonic() - started < 2.5
    assert await subscribers() == before
