"""The worker asks Asterisk not to send the event types it never reads
(``PUT /applications/{app}/eventFilter``): on the real Asterisk 22 and on the ARI simulator,
the filter's rules as res_ari_applications applies them, and the filter the worker sets."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from asterisk_fixtures import AsteriskWorker, RealAsterisk
from engines import ARI_PASSWORD, ARI_USER

from appserver.asterisk.ari import UNUSED_EVENTS
from appserver.devkit.sim.ari import AriSimulator


async def filter_rules(base: str, user: str, password: str) -> list[Any]:
    """What each filter request answers, for an application of this test's own."""
    app, out = "callyard-filter-test", []
    url = f"{base}/ari/applications/{app}/eventFilter"
    auth = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.put(url, json={"disallowed": []}) as resp:
            out.append(resp.status)  # not registered
        async with http.ws_connect(f"{base.replace('http', 'ws', 1)}/ari/events?app={app}"):
            for body in ({"disallowed": [{"type": "ChannelVarset"}]},
                         {"allowed": [{"type": "StasisStart"}]},  # the other list stays
                         {"disallowed": []},
                         {},  # clears both
                         {"disallowed": ["ChannelVarset"]}):  # not {"type": ...}
                async with http.put(url, json=body) as resp:
                    data = await resp.json() if resp.status == 200 else None
                    out.append((resp.status, data and (data["events_allowed"],
                                                       data["events_disallowed"])))
    return out


EXPECTED = [
    404,
    (200, ([], [{"type": "ChannelVarset"}])),
    (200, ([{"type": "StasisStart"}], [{"type": "ChannelVarset"}])),
    (200, ([{"type": "StasisStart"}], [])),
    (200, ([], [])),
    (400, None),
]


async def test_event_filter_rules_on_the_simulator() -> None:
    sim = AriSimulator()
    await sim.start()
    try:
        assert await filter_rules(sim.base_url, sim.username, sim.password) == EXPECTED
    finally:
        await sim.stop()


@pytest.mark.real_engine
async def test_event_filter_rules_on_the_real_asterisk(asterisk_engine: RealAsterisk) -> None:
    base = f"http://127.0.0.1:{asterisk_engine.conf.http_port}"
    assert await filter_rules(base, ARI_USER, ARI_PASSWORD) == EXPECTED


async def test_the_worker_leaves_out_what_it_never_reads(asterisk_worker: AsteriskWorker,
                                                         asterisk_engine: RealAsterisk) -> None:
    url = f"http://127.0.0.1:{asterisk_engine.conf.http_port}/ari/applications/" \
          f"{asterisk_worker.app}"
    auth = {"Authorization": aiohttp.encode_basic_auth(ARI_USER, ARI_PASSWORD)}
    async with aiohttp.ClientSession(headers=auth) as http, http.get(url) as resp:
        app = await resp.json()
    assert {e["type"] for e in app["events_disallowed"]} == set(UNUSED_EVENTS)
    assert app["events_allowed"] == []
