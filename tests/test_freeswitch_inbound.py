"""Inbound ESL links (gevent, in a subprocess) against the ESL simulator: greenswitch 0.0.19's
``event json`` crash and ``bgapi`` body bugs are fixed, a lost node reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from test_freeswitch_e2e import free_port

from appserver.devkit.sim.esl.channel import HOSTNAME
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator

ROOT = Path(__file__).resolve().parents[1]


async def test_node_link_commands_events_and_reconnect() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "fs_node_probe.py"),
        str(port),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None

    async def step(name: str) -> dict[str, object]:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        except TimeoutError:
            line = b""
        if not line:
            if proc.returncode is None:
                proc.kill()
            err = await proc.stderr.read()  # type: ignore[union-attr]
            raise AssertionError(f"probe gave no {name!r} step: {err.decode()[-3000:]}")
        data: dict[str, object] = json.loads(line)
        assert data["step"] == name, data
        return data

    sim = FreeswitchSimulator([], Behaviour(prompt_seconds=30))
    try:
        down = await step("down")
        assert down["connected"] is False and down["error"]
        assert "not connected" in str(down["api"])
        await sim.start(esl_port=port)
        assert (await step("up"))["ok"] is True
        checks = await step("checks")
        assert checks["json_reply"] == "+OK event listener enabled json"
        assert str(checks["job_body"][0]).startswith("UP ")  # type: ignore[index]
        assert str(checks["after_json"]).startswith("UP ")
        assert checks["bad_auth"] == "NotConnectedError"
        assert str(checks["bgapi"]).startswith("UP ")
        assert checks["exists"] == "true"
        # in one round trip, replies in order
        exists_many = checks["api_many"]
        assert exists_many[:2] == ["true", "false"]  # type: ignore[index]
        assert str(exists_many[2]).startswith("UP ")  # type: ignore[index]
        assert checks["api_many_batches"] == ["true"]  # 250: more than one batch
        # (uuid, node) -> on that node: a call naming no node is asked of every node, and
        # a node that does not answer (down) or is not the worker's (elsewhere) gives None
        assert checks["calls_exist"] == [True, None, True, False, True, None, None]
        assert checks["broadcast"] == "+OK Message queued\n"
        assert checks["transfer_missing"] == "-ERR No such channel!\n"
        assert checks["kill"] == "+OK\n"
        # The node's name as its outbound sockets report it (FreeSWITCH-Hostname): where
        # a callback is dialled from (README "Callback in queue").
        assert checks["hostname"] == HOSTNAME
        assert (await step("events"))["names"] == ["BACKGROUND_JOB", "CHANNEL_HANGUP"]
        await sim.stop()
        assert (await step("lost"))["ok"] is True
        sim = FreeswitchSimulator([], Behaviour())
        await sim.start(esl_port=port)
        again = await step("reconnected")
        assert again["ok"] is True and again["connects"] == 2
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await sim.stop()
