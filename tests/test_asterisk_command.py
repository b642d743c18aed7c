"""``callyard asterisk`` as a process: settings errors, and serving a (simulated) Asterisk."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from appserver.devkit.sim.ami import AmiSimulator
from appserver.devkit.sim.ari import AriSimulator
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


async def test_serves_asterisk_and_stops_on_sigterm(redis_url: str) -> None:
    async with AriSimulator() as ari, AmiSimulator(ari) as ami:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appserver.cli", "asterisk", "--flow-factory",
            "test_asterisk_command:hangup_factory",
            env=_env(CALLYARD_REDIS_URL=redis_url, CALLYARD_ASTERISK_ARI=ari.url_with_credentials,
                     CALLYARD_ASTERISK_AMI=ami.address), stderr=asyncio.subprocess.PIPE,
        )
        try:
            await ari.wait_app_connected("callyard", timeout=20)
            for _ in range(200):
                if ami.clients:
                    break
                await asyncio.sleep(0.05)
            assert ami.clients, "the worker never logged in to AMI"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert b"Stasis application 'callyard'" in err
