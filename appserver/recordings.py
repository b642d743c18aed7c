"""Recorded calls on disk and in PostgreSQL: checksums once the files are closed, and the
retention purge. Files live in ``CALLYARD_RECORDINGS_DIR`` (the engines' recordings
directory, shared with the hosts that run ``callyard api`` / ``cdr-writer``); rows in the
``recordings`` table come from the calls' CDRs (migration 008)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import wave
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

log = logging.getLogger("callyard.recordings")
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_in(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a file inside ``root`` (never outside it), else None."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if base in path.parents and path.is_file() else None


def wav_seconds(path: Path) -> float | None:
    """The length of a WAV file, None when it is not one."""
    try:
        with wave.open(str(path)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None


def _examine(path: Path) -> tuple[str, float | None]:
    return sha256_file(path), wav_seconds(path)


async def add_checksums(pool: asyncpg.Pool, root: Path, call_ids: Iterable[str]) -> int:
    """SHA-256 of the new recordings of ``call_ids`` whose files are closed and readable
    (their CDR is stored: the call is over), and their length as written (FreeSWITCH keeps
    paused stretches as silence, Asterisk leaves them out); returns how many were done. A
    file this host cannot see keeps its checksum NULL and the worker's length (logged)."""
    rows = await pool.fetch("SELECT id, path FROM recordings"
                            " WHERE call_id = ANY($1::text[]) AND checksum IS NULL",
                            list(call_ids))
    added = 0
    for row in rows:
        path = file_in(root, row["path"])
        if path is None:
            log.warning("recording file not found: no checksum",
                        extra={"path": row["path"], "directory": str(root)})
            continue
        checksum, seconds = await asyncio.to_thread(_examine, path)
        await pool.execute("UPDATE recordings SET checksum = $2,"
                           " seconds = coalesce($3, seconds) WHERE id = $1", row["id"],
                           checksum, None if seconds is None else round(seconds, 3))
        added += 1
    return added


async def purge(pool: asyncpg.Pool, root: Path, days: int, now: datetime) -> tuple[int, int]:
    """Delete recordings that started more than ``days`` ago: the file, then the row (a file
    already gone is fine, so running again or concurrently is harmless). Returns (rows
    deleted, files deleted)."""
    cutoff = now - timedelta(days=days)
    rows = await pool.fetch("SELECT id, path FROM recordings WHERE started_at < $1 ORDER BY id",
                            cutoff)
    files = 0
    for row in rows:
        path = file_in(root, row["path"])
        if path is not None:
            path.unlink(missing_ok=True)
            files += 1
        await pool.execute("DELETE FROM recordings WHERE id = $1", row["id"])
    return len(rows), files
