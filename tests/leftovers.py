"""Finding processes a command left behind: its descendants, the embedded servers of its data
directory (daemons that left its process tree: pg_ctl and redis-server detach) and anything
else in those processes' groups."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psutil


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def in_directory(directory: Path) -> list[psutil.Process]:
    """Live processes whose working directory or command line points into ``directory``."""
    root = str(directory.resolve())
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        cwd = proc.info["cwd"] or ""
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (cwd.startswith(root) or root in cmdline) and _alive(proc):
            found.append(proc)
    return found


def family(pid: int, directory: Path) -> list[psutil.Process]:
    """Process ``pid``, its descendants and the processes working in ``directory``."""
    top = psutil.Process(pid)
    members = {p.pid: p for p in [top, *top.children(recursive=True), *in_directory(directory)]}
    return list(members.values())


def groups(processes: list[psutil.Process]) -> set[int]:
    """Their process groups, except this (test) process's own."""
    found = {_pgid(p.pid) for p in processes}
    return {g for g in found if g is not None} - {os.getpgrp()}


def left_running(pgids: set[int], directory: Path) -> list[str]:
    """Live processes still in one of ``pgids`` or working in ``directory``, described."""
    left = {p.pid: p for p in in_directory(directory)}
    for proc in psutil.process_iter():
        if _pgid(proc.pid) in pgids and _alive(proc):
            left[proc.pid] = proc
    out = []
    for proc in left.values():
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return out


def wait_all_gone(pgids: set[int], directory: Path, timeout: float = 15.0) -> list[str]:
    """Wait until nothing of ``pgids`` / ``directory`` runs; what is still running then."""
    deadline = time.monotonic() + timeout
    while (left := left_running(pgids, directory)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_all(directory: Path) -> None:
    """After a failed test: kill whatever still works in ``directory``."""
    for proc in in_directory(directory):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
