"""`callyard dev` as a newcomer runs it: one command, then calls over HTTP on both engines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from appserver.embedded import free_port


@pytest.fixture(scope="module")
def dev_server() -> Iterator[str]:
    # Not under pytest's tmp_path: embedded PostgreSQL runs as another user under root and
    # pytest makes its base directory private.
    data_dir = Path(tempfile.mkdtemp(prefix="callyard-dev-test-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env["CALLYARD_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appserver.cli", "dev", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        _wait_ready(base, proc)
        startup = time.monotonic() - started
        assert startup < 30, f"callyard dev took {startup:.1f}s to be ready"
        # The session secret sits with the data (0600), not in Redis or the working directory.
        assert (data_dir / "api-secret").stat().st_mode & 0o077 == 0
        yield base
    finally:
        family = _family(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            output = proc.stdout.read() if proc.stdout else ""
        assert proc.returncode == 0, output[-3000:]
        deadline = time.monotonic() + 10
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family):
            assert time.monotonic() < deadline, f"left running: {family}"
            time.sleep(0.1)
        shutil.rmtree(data_dir, ignore_errors=True)


def _family(pid: int) -> list[psutil.Process]:
    """The dev process's children: workers and embedded servers."""
    return psutil.Process(pid).children(recursive=True)


def _wait_ready(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("callyard dev never became ready")


def _wait_for(base: str, call_id: str, kind: str, detail: str = "", timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        call = httpx.get(f"{base}/sim/calls/{call_id}", timeout=5).json()
        for entry in call["transcript"]:
            if entry["kind"] == kind and entry["detail"].startswith(detail):
                return call
        assert time.monotonic() < deadline, f"no {kind} {detail!r} in {call['transcript']}"
        time.sleep(0.1)


@pytest.mark.parametrize("engine", ["freeswitch", "asterisk"])
def test_menu_to_queue(dev_server: str, engine: str) -> None:
    base = dev_server
    resp = httpx.post(f"{base}/sim/calls", json={"to": "9999", "from": "+15550100",
                                                 "engine": engine}, timeout=10)
    assert resp.status_code == 201, resp.text
    call_id = resp.json()["id"]
    _wait_for(base, call_id, "prompt_started", "file:demo/main-menu")
    httpx.post(f"{base}/sim/calls/{call_id}/dtmf", json={"digits": "2"}, timeout=10)
    call = _wait_for(base, call_id, "moh")  # waiting in the support queue, on hold
    assert call["prompts"][:3] == ["file:demo/welcome", "file:demo/main-menu",
                                   "file:demo/connecting-support"]
    call = httpx.post(f"{base}/sim/calls/{call_id}/hangup", timeout=10).json()
    assert call["state"] == "ended"


@pytest.mark.parametrize("engine", ["freeswitch", "asterisk"])
def test_menu_to_an_extension(dev_server: str, engine: str) -> None:
    base = dev_server
    call_id = httpx.post(f"{base}/sim/calls", json={"to": "9999", "engine": engine},
                         timeout=10).json()["id"]
    _wait_for(base, call_id, "prompt_started", "file:demo/main-menu")
    httpx.post(f"{base}/sim/calls/{call_id}/dtmf", json={"digits": "3"}, timeout=10)
    call = _wait_for(base, call_id, "dialed")
    assert "file:demo/calling-alice" in call["prompts"]
    httpx.post(f"{base}/sim/calls/{call_id}/hangup", timeout=10)


def test_bad_requests_are_clear(dev_server: str) -> None:
    base = dev_server
    resp = httpx.post(f"{base}/sim/calls", json={"to": "not a number"}, timeout=5)
    assert resp.status_code == 422 and "to" in resp.text
    assert httpx.get(f"{base}/sim/calls/nope", timeout=5).status_code == 404
    page = httpx.get(f"{base}/softphone", timeout=5)
    assert page.status_code == 200 and "Callyard softphone" in page.text


@pytest.mark.parametrize(("engine", "agent"), [("freeswitch", "alice"), ("asterisk", "bob")])
def test_an_agent_takes_the_call_by_hand(dev_server: str, engine: str, agent: str) -> None:
    """The walk-through the README promises: dial 9999, press 2, an agent accepts."""
    base = dev_server
    login = httpx.post(f"{base}/api/auth/login",
                       json={"username": agent, "password": f"{agent}-demo"}, timeout=10)
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['token']}"}
    assert httpx.post(f"{base}/api/agent/login", headers=auth, timeout=10).status_code == 200
    call_id = httpx.post(f"{base}/sim/calls", json={"to": "9999", "engine": engine},
                         timeout=10).json()["id"]
    try:
        _wait_for(base, call_id, "prompt_started", "file:demo/main-menu")
        httpx.post(f"{base}/sim/calls/{call_id}/dtmf", json={"digits": "2"}, timeout=10)
        _wait_for(base, call_id, "moh")
        deadline = time.monotonic() + 15
        while (status := httpx.get(f"{base}/api/agent/status", headers=auth,
                                   timeout=10).json())["offer"] != call_id:
            assert time.monotonic() < deadline, f"no offer of {call_id}: {status}"
            time.sleep(0.1)
        assert status["offer_details"]["menu_path"] == ["main"]
        accepted = httpx.post(f"{base}/api/agent/accept", json={"call": call_id},
                              headers=auth, timeout=10).json()
        assert accepted["ok"] and accepted["livekit"]["room"] == f"call-{call_id}"
        call = _wait_for(base, call_id, "bridged")
        dialed = [e["detail"] for e in call["transcript"] if e["kind"] == "dialed"]
        assert any(f"call-{call_id}" in d for d in dialed), dialed  # the call's LiveKit room
    finally:
        httpx.post(f"{base}/sim/calls/{call_id}/hangup", timeout=10)
    deadline = time.monotonic() + 15
    while (state := httpx.get(f"{base}/api/agent/status", headers=auth,
                              timeout=10).json()["state"]) == "on_call":
        assert time.monotonic() < deadline, "the agent stayed on the call after the hangup"
        time.sleep(0.1)
    assert state in ("wrap_up", "available")
