"""``callyard asterisk`` as a process: settings errors, and serving the in-process simulator."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from appserver.devkit.embedded import free_port
from ivr.calls import CallFlow, CallInfo, Command, Event, Hangup

ROOT = Path(__file__).resolve().parents[1]


class _HangupFlow:
    done = False

    def start(self, call: CallInfo) -> list[Command]:
        self.done = True
        return [Hangup()]

    def handle(self, event: Event) -> list[Command]:
        return []


def hangup_factory(info: CallInfo) -> CallFlow:
    """A flow factory importable as ``test_asterisk_command:hangup_factory``."""
    return _HangupFlow()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env.update(extra)
    return env


def _callyard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appserver.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_clear_errors() -> None:
    out = _callyard("asterisk", env=_env())  # the IVR menus serve by default: no app needed
    assert out.returncode == 2 and "no Asterisk node" in out.stderr
    out = _callyard("asterisk", "--flow-factory", "nope:x", env=_env())
    assert out.returncode == 2 and "cannot import 'nope'" in out.stderr
    out = _callyard("asterisk", "--flow-factory", "test_asterisk_command:hangup_factory",
                    env=_env())
    assert out.returncode == 2 and "CALLYARD_ASTERISK_ARI" in out.stderr
    out = _callyard("asterisk", env=_env(CALLYARD_ASTERISK_ARI="http://host:8088"))
    assert out.returncode == 2 and "CALLYARD_ASTERISK_ARI" in out.stderr


async def test_serves_the_simulator_and_stops_on_sigterm(redis_url: str) -> None:
    port, ami_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", "asterisk", "--sim", "--sim-port", str(port),
        "--sim-ami-port", str(ami_port), "--flow-factory",
        "test_asterisk_command:hangup_factory",
        env=_env(CALLYARD_REDIS_URL=redis_url), stderr=asyncio.subprocess.PIPE,
    )
    auth = "Basic " + base64.b64encode(b"callyard:callyard").decode()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
            for _ in range(200):
                try:
                    async with http.get(
                        f"http://127.0.0.1:{port}/ari/applications/callyard"
                    ) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the worker never registered its Stasis application")
            reader, writer = await asyncio.open_connection("127.0.0.1", ami_port)
            assert (await reader.readline()).startswith(b"Asterisk Call Manager/")
            writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert b"Stasis application 'callyard'" in err
