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


@dataclass(frozen=True)
class AsteriskConf:
    http_port: int = 8088  # ARI (the engines script checks readiness over the CLI)
    ami_port: int = 5038
    sip_port: int = 5080
    edge_port: int = 5070  # where the transfer context sends calls (Kamailio in production)
    apps: tuple[str, ...] = ("callyard", "callyard-2")  # the workers' Stasis apps, in order

    @property
    def app(self) -> str:
        return self.apps[0]

    @property
    def ari_url(self) -> str:
        return f"http://{ARI_USER}:{ARI_PASSWORD}@127.0.0.1:{self.http_port}"

    @property
    def ami(self) -> str:
        return f"127.0.0.1:{self.ami_port}:{AMI_USER}:{AMI_SECRET}"


# What the project's #exec scripts read from the container environment (asterisk-conf/scripts).
ASTERISK_ENV = {
    "ASTERISK_ARI_USER": ARI_USER, "ASTERISK_ARI_PASSWORD": ARI_PASSWORD,
    "ASTERISK_AMI_USER": AMI_USER, "ASTERISK_AMI_SECRET": AMI_SECRET, "PUBLIC_IP": "127.0.0.1",
}


def _sections(text: str) -> list[tuple[str, str]]:
    """An Asterisk .conf file as (section name, its text including the header line)."""
    out: list[tuple[str, str]] = [("", "")]
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            out.append((line[1:].split("]")[0], ""))
        name, body = out[-1]
        out[-1] = (name, body + line)
    return out


def merge_asterisk_conf(stock: str, project: str) -> str:
    """The stock asterisk.conf's [directories] (as a real section: the stock file marks it a
    template ``(!)``, which Asterisk ignores, so ``astetcdir`` would not apply) and
    [files], with the project's [options] (``execincludes = yes`` ...)."""
    options = [body for name, body in _sections(project) if name == "options"]
    kept = [body.replace("[directories](!)", "[directories]", 1)
            for name, body in _sections(stock) if name in ("", "directories", "files")]
    return "".join(kept[:2] + options + kept[2:])


def build_asterisk_conf(directory: Path, conf: AsteriskConf) -> Path:
    """The stock configuration with Callyard's rendered files laid over it, as the compose
    stack mounts ``asterisk-conf/`` (and its ``scripts/``) as ``/etc/asterisk``."""
    engines("conf", "asterisk", str(directory))
    rendered = render(directory.parent / "ast-rendered", {
        "asterisk_conf_dir": str(directory),
        "asterisk_bind_ip": "127.0.0.1",
        "asterisk_edge_host": "127.0.0.1",
        "asterisk_edge_port": str(conf.edge_port),
        "asterisk_http_port": str(conf.http_port),
        "asterisk_ami_port": str(conf.ami_port),
        "asterisk_sip_port": str(conf.sip_port),
        "asterisk_manager_acl": "127.0.0.1/32",
        "asterisk_apps": ",".join(conf.apps),
    }) / "asterisk-conf"
    for path in sorted(rendered.glob("*.conf")):
        if path.name == "asterisk.conf":
            stock = (directory / path.name).read_text()
            (directory / path.name).write_text(merge_asterisk_conf(stock, path.read_text()))
        else:
            shutil.copyfile(path, directory / path.name)
    _replace_dir(REPO / "asterisk-conf" / "scripts", directory / "scripts")
    ari = directory / "ari.conf"  # the probe links a call's channels by their linked id
    ari.write_text(ari.read_text().replace(
        "[general]\n", "[general]\nchannelvars = CHANNEL(linkedid)  ; tests only\n", 1))
    with (directory / "logger.conf").open("a") as out:  # [logfiles] is its last section
        out.write(f"{AST_LOG.name} => notice,warning,error,verbose\n")  # for failures
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


def start_asterisk(directory: Path) -> None:
    stop("asterisk")
    engines("start", "asterisk", "--conf", str(directory), env=ASTERISK_ENV)


def asterisk_cli(command: str) -> str:
    return engines("rx", "asterisk", command)
