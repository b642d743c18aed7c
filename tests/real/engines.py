"""The real FreeSWITCH 1.10.12 and Asterisk 22.10.1 of ``../shared/engines`` (tests only).

Each engine is started with *the project's own configuration*: ``callyard render-config
--out`` renders the shipped templates for loopback and the files are laid over the engine's
stock test configuration exactly as the compose stack mounts them. Only one instance of each
engine can run at a time (fixed ports), so the fixtures that use this module are
session-scoped and hold the engine exclusively (:func:`exclusive`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINES = REPO.parent / "shared" / "engines" / "engines"
TEST_CONF = Path(__file__).resolve().parent / "conf"

ESL_PASSWORD = "ClueCon"  # the engines script checks readiness with it
ARI_USER, ARI_PASSWORD = "callyard", "callyard-test"
AMI_USER, AMI_SECRET = "callyard", "callyard-test"
FS_SOUNDS = Path("/opt/freeswitch/sounds/en/us/callie")
AST_SOUNDS = Path("/opt/asterisk/var/lib/asterisk/sounds/en")
FS_LOG = Path("/opt/freeswitch/log/freeswitch.log")
AST_LOG = Path("/opt/asterisk/var/log/asterisk/messages")


def unavailable_reason() -> str | None:
    """Why the real engines cannot run here, or None when they can."""
    if not ENGINES.exists():
        return f"real engines not found at {ENGINES} (they exist only beside CI's checkout)"
    if os.geteuid() != 0:
        return "real engines need root (they install under /opt)"
    return None


def engines(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    result = subprocess.run(
        [str(ENGINES), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise RuntimeError(f"engines {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def render(out: Path, variables: dict[str, str]) -> Path:
    """``callyard render-config --out`` with ``--var`` overrides; returns ``out``."""
    args = [sys.executable, "-m", "appserver.cli", "render-config", "--root", str(REPO),
            "--out", str(out)]  # fmt: skip
    for name, value in variables.items():
        args += ["--var", f"{name}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"render-config failed: {result.stdout}{result.stderr}")
    return out


def _replace_dir(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


@dataclass
class FreeswitchConf:
    workers: tuple[int, ...]  # outbound-ESL ports of the Callyard workers, in dialplan order
    sip_port: int = 5062  # the callyard SIP profile (Kamailio dispatches here)
    directory: Path = Path()  # the built configuration


def build_freeswitch_conf(directory: Path, conf: FreeswitchConf) -> Path:
    """The stock configuration with Callyard's rendered files laid over it, as compose does:
    vars, ACL, event socket and switch settings replaced; the SIP profiles and the dialplan
    folders replaced by Callyard's (one profile ``callyard``, one context ``callyard``)."""
    engines("conf", "freeswitch", str(directory))
    rendered = render(directory.parent / "fs-rendered", {
        "freeswitch_workers": ",".join(f"127.0.0.1:{p}" for p in conf.workers),
        "freeswitch_sip_ip": "127.0.0.1",
        "freeswitch_sip_port": str(conf.sip_port),
        "freeswitch_esl_acl": "127.0.0.1/32",
    }) / "freeswitch-conf" / "conf"
    for name in ("vars.xml", "autoload_configs/acl.conf.xml",
                 "autoload_configs/event_socket.conf.xml", "autoload_configs/switch.conf.xml"):
        shutil.copyfile(rendered / name, directory / name)
    _replace_dir(rendered / "sip_profiles", directory / "sip_profiles")
    _replace_dir(rendered / "dialplan", directory / "dialplan")
    return directory


BINARIES = {
    "freeswitch": "/opt/freeswitch/bin/freeswitch",
    "asterisk": "/opt/asterisk/sbin/asterisk",
}


def _pids(engine: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"^{BINARIES[engine]}"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def stop(engine: str, timeout: float = 30) -> None:
    """Stop the engine and wait until its process is gone (``engines stop`` returns early
    when the engine wrote no pid file where it looks, e.g. FreeSWITCH with ``--conf``)."""
    engines("stop", engine)
    deadline = time.monotonic() + timeout
    while _pids(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _pids(engine):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def exclusive(engine: str, timeout: float = 1800) -> Iterator[None]:
    """Hold the engine for this test session: another session on this machine (a second
    checkout, a developer's run) waits here instead of restarting the engine under us."""
    with open(f"/tmp/callyard-real-{engine}.lock", "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{engine} is held by another test session") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_freeswitch(directory: Path) -> None:
    stop("freeswitch")
    engines("start", "freeswitch", "--conf", str(directory),
            env={"CALLYARD_ESL_PASSWORD": ESL_PASSWORD})


def fs_cli(command: str) -> str:
    return engines("rx", "freeswitch", command)
