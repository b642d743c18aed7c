"""`callyard dev` as a newcomer runs it: one command, then calls over HTTP on both engines."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import leftovers
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appserver.devkit.embedded import free_port


def start_callyard(data_dir: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(CALLYARD_LOG_LEVEL="WARNING", CALLYARD_DATA_DIR=str(data_dir), **extra)
    return subprocess.Popen(
        [sys.executable, "-m", "appserver.cli", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: the leftover check looks at groups
    )


def start_dev(data_dir: Path, port: int) -> subprocess.Popen[str]:
    return start_callyard(data_dir, "dev", "--port", str(port), "--data-dir", str(data_dir))


def stop_dev(proc: subprocess.Popen[str], data_dir: Path, sig: int) -> str:
    """Send ``sig``; the command must exit 0 leaving nothing running: no worker, no
    embedded server (they detach from its process tree) and nothing in their groups. Its
    output."""
    pgids = leftovers.groups(leftovers.family(proc.pid, data_dir))
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output[-3000:]
    left = leftovers.wait_all_gone(pgids, data_dir)
    assert not left, f"left running after {signal.Signals(sig).name}: {left}\n{output[-3000:]}"
    return output


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: embedded PostgreSQL runs as another user under root and
    # pytest makes its base directory private.
    path = Path(tempfile.mkdtemp(prefix="callyard-dev-test-"))
    yield path
    leftovers.kill_all(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dev_server() -> Iterator[str]:
    data_dir = Path(tempfile.mkdtemp(prefix="callyard-dev-test-"))
    port = free_port()
    proc = start_dev(data_dir, port)
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
        try:
            stop_dev(proc, data_dir, signal.SIGINT)  # Ctrl-C
        finally:
            leftovers.kill_all(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


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


def test_freeswitch_park_ingress(data_dir: Path) -> None:
    """``callyard dev --freeswitch-ingress park``: the simulated FreeSWITCH parks its calls
    and the FreeSWITCH worker, in park mode, takes them over its inbound connection."""
    port = free_port()
    proc = start_callyard(data_dir, "dev", "--port", str(port), "--data-dir", str(data_dir),
                          "--freeswitch-ingress", "park")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        resp = httpx.post(f"{base}/sim/calls", json={"to": "9999", "engine": "freeswitch"},
                          timeout=10)
        assert resp.status_code == 201, resp.text
        call_id = resp.json()["id"]
        _wait_for(base, call_id, "prompt_started", "file:demo/main-menu")
        httpx.post(f"{base}/sim/calls/{call_id}/dtmf", json={"digits": "2"}, timeout=10)
        call = _wait_for(base, call_id, "moh")
        assert call["prompts"][:3] == ["file:demo/welcome", "file:demo/main-menu",
                                       "file:demo/connecting-support"]
        assert httpx.post(f"{base}/sim/calls/{call_id}/hangup",
                          timeout=10).json()["state"] == "ended"
    finally:
        output = stop_dev(proc, data_dir, signal.SIGTERM)
    assert "(ingress park)" in output


def test_bad_requests_are_clear(dev_server: str) -> None:
    base = dev_server
    resp = httpx.post(f"{base}/sim/calls", json={"to": "not a number"}, timeout=5)
    assert resp.status_code == 422 and "to" in resp.text
    assert httpx.get(f"{base}/sim/calls/nope", timeout=5).status_code == 404
    page = httpx.get(f"{base}/softphone", timeout=5)
    assert page.status_code == 200 and "Callyard softphone" in page.text


def test_the_softphone_page_loads_its_files(dev_server: str) -> None:
    """The softphone lives in appserver/devkit (mounted by callyard dev, not by the API)."""
    page = httpx.get(f"{dev_server}/softphone", timeout=5).text
    files = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert len(files) == 2, files
    for url in files:
        assert httpx.get(url if "://" in url else dev_server + url, timeout=5).status_code == 200
    assert '"demo/welcome": "Welcome to Callyard."' in page  # captions: the sound catalogue


@pytest.mark.parametrize("engine", ["freeswitch", "asterisk"])
def test_try_a_draft_with_a_simulated_call(dev_server: str, engine: str) -> None:
    """The admin editor's "Try it" in callyard dev: the demo admin gets a trial number for an
    unsaved menu; the simulated engine dials it, a worker walks the draft (callers of 9999
    still hear the live menus), keys work; a number that is not a live trial is not served."""
    base = dev_server
    with httpx.Client(base_url=base, timeout=10) as admin:
        login = admin.post("/api/auth/login", json={"username": "admin",
                                                   "password": "admin-demo"})
        assert login.status_code == 200, login.text
        draft = {"greeting": ["file:demo/welcome"], "timeout_prompt": ["file:demo/goodbye"],
                 "first_digit_timeout": 30,
                 "options": [{"digits": "1", "action": "submenu", "target": "main"}]}
        trial = admin.post("/api/menu-drafts/trial-calls",
                           json={"menu": "try-me", "menus": {"try-me": draft}})
        assert trial.status_code == 201, trial.text
        number = trial.json()["number"]
        assert re.fullmatch(r"\*99[0-9]{8}", number)
        # Not a page of the API: the role is checked (an agent may not make one).
        with httpx.Client(base_url=base, timeout=10) as agent:
            agent.post("/api/auth/login", json={"username": "alice", "password": "alice-demo"})
            assert agent.post("/api/menu-drafts/trial-calls",
                              json={"menu": "try-me", "menus": {"try-me": draft}}
                              ).status_code == 403
    call_id = httpx.post(f"{base}/sim/calls", json={"to": number, "engine": engine},
                         timeout=10).json()["id"]
    _wait_for(base, call_id, "prompt_started", "file:demo/welcome")
    httpx.post(f"{base}/sim/calls/{call_id}/dtmf", json={"digits": "1"}, timeout=10)
    call = _wait_for(base, call_id, "prompt_started", "file:demo/main-menu")  # the live main
    assert call["prompts"][0] == "file:demo/welcome"
    httpx.post(f"{base}/sim/calls/{call_id}/hangup", timeout=10)
    unknown = "*99" + ("0" * 8 if number != "*9900000000" else "1" * 8)
    call_id = httpx.post(f"{base}/sim/calls", json={"to": unknown, "engine": engine},
                         timeout=10).json()["id"]
    call = _wait_for(base, call_id, "hangup")
    assert "file:demo/welcome" not in call["prompts"]


def test_metrics_show_every_process(dev_server: str) -> None:
    """Finding: in callyard dev, /metrics showed only the API's families, while calls, engine
    links and IVR step latency live in the workers. The printed URL now shows every
    process, each sample labelled with its process, HELP and TYPE once per family."""
    base = dev_server
    for engine in ("freeswitch", "asterisk"):
        call_id = httpx.post(f"{base}/sim/calls", json={"to": "9999", "engine": engine},
                             timeout=10).json()["id"]
        _wait_for(base, call_id, "prompt_started", "file:demo/main-menu")
        httpx.post(f"{base}/sim/calls/{call_id}/hangup", timeout=10)
    text = httpx.get(f"{base}/metrics", timeout=10).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in samples
                 if s.name == name and labels.items() <= s.labels.items()]
        assert found, f"no {name} {labels} in /metrics"
        return sum(found)

    for engine in ("freeswitch", "asterisk"):
        process = f"{engine}-worker"
        assert value("callyard_calls_total", engine=engine, process=process) >= 1
        assert value("callyard_engine_connected", engine=engine, process=process) == 1
        assert value("callyard_ivr_step_seconds_count", engine=engine, process=process) >= 1
        assert value("callyard_process_up", process=process) == 1
    for process in ("api", "freeswitch-worker", "asterisk-worker"):
        assert value("process_resident_memory_bytes", process=process) > 0
    assert value("callyard_menu_version", process="api") >= 1
    for kind in ("# HELP ", "# TYPE "):
        names = [line.split()[2] for line in text.splitlines() if line.startswith(kind)]
        assert len(names) == len(set(names)), f"{kind.strip()} repeated"


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_workers_and_embedded_servers(data_dir: Path, sig: int) -> None:
    """Finding: SIGTERM to callyard dev left the embedded PostgreSQL and Redis running
    (uvicorn re-raised SIGTERM after its own shutdown and the process died before its
    clean-up). Both signals must stop everything, checked by process group and data dir."""
    port = free_port()
    proc = start_dev(data_dir, port)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        stop_dev(proc, data_dir, sig)


def test_sigterm_while_starting_leaves_nothing_running(data_dir: Path) -> None:
    """A SIGTERM that arrives while the embedded PostgreSQL is still starting is honoured
    once start-up is done: nothing is left half-started."""
    proc = start_dev(data_dir, free_port())
    deadline = time.monotonic() + 60
    while not (data_dir / "postgres" / "postmaster.pid").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "PostgreSQL never started"
        time.sleep(0.02)
    stop_dev(proc, data_dir, signal.SIGTERM)


def test_api_sigterm_runs_its_clean_up(data_dir: Path, pg_dsn: str, redis_url: str) -> None:
    """Finding: the same uvicorn SIGTERM re-raise killed `callyard api` before its clean-up
    (which then stopped embedded servers; it now requires its storage URLs instead, see
    tests/test_storage_policy.py): it exits 0 leaving nothing running."""
    port = free_port()
    proc = start_callyard(data_dir, "api", "--port", str(port), CALLYARD_DATABASE_URL=pg_dsn,
                          CALLYARD_REDIS_URL=redis_url)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        stop_dev(proc, data_dir, signal.SIGTERM)
