"""Callyard's own processes for the real-engine tests: ``callyard api``, ``cdr-writer`` and the
workers, started as a user would (the ``callyard`` command, settings from the environment)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from appserver.devkit.embedded import free_port

REPO = Path(__file__).resolve().parents[2]


def base_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
        CALLYARD_DATABASE_URL=database_url,
        CALLYARD_REDIS_URL=redis_url,
        CALLYARD_LOG_LEVEL="INFO",
        **extra,
    )
    return env


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.3).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def callyard(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run a one-shot ``callyard`` command to completion; its output, or an error saying why."""
    result = subprocess.run([sys.executable, "-m", "appserver.cli", *args], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"callyard {' '.join(args)}: {result.stdout}{result.stderr}")
    return result.stdout + result.stderr


@dataclass
class Process:
    """One ``callyard <command>`` process; its output goes to ``log`` (kept for failures)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0  # its /healthz /readyz /metrics, when it serves them

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appserver.cli", *self.args], cwd=REPO, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    """The processes of one test session; stopped in reverse order."""

    directory: Path
    database_url: str
    redis_url: str
    common: dict[str, str] = field(default_factory=dict)  # settings every process gets
    processes: list[Process] = field(default_factory=list)
    api_url: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(self.database_url, self.redis_url, **{**self.common, **extra})

    def run(self, *args: str, timeout: float = 120) -> str:
        """A one-shot ``callyard`` command (migrate, menus publish ...) on this stack."""
        return callyard(*args, env=self.env(), timeout=timeout)

    def start(self, name: str, *args: str, ready_port: int | None = None, **env: str) -> Process:
        process = Process(name, list(args), self.env(**env), self.directory / f"{name}.log")
        self.processes.append(process.start())
        if ready_port is not None:
            wait_port(ready_port, process.proc)
        return process

    def process(self, name: str) -> Process:
        """The last process started under ``name``."""
        return next(p for p in reversed(self.processes) if p.name == name)

    def api(self) -> Process:
        """``callyard api`` on a free port (``api_url``)."""
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        return self.start("api", "api", ready_port=port, CALLYARD_API_HOST="127.0.0.1",
                          CALLYARD_API_PORT=str(port),
                          CALLYARD_DATA_DIR=str(self.directory))  # its api-secret

    def wait_published(self, timeout: float = 30) -> None:
        """Until ``callyard api`` has published the menu set (or say what it reported)."""
        import redis

        from appserver.menus import keys

        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        deadline = time.monotonic() + timeout
        while not client.get(keys.CURRENT):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no menu set published: {client.hgetall(keys.STATUS)}"
                                   f"\n{self.logs()}")
            time.sleep(0.1)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {p.name}\n{p.output()[-6000:]}" for p in self.processes)
