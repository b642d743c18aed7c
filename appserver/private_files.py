"""Files and directories only their owner may read: data directories and generated secrets.

Used for the embedded servers' data (``CALLYARD_DATA_DIR``), their passwords and the API's
session-signing secret when ``CALLYARD_API_SECRET`` is unset.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

_GROUP_OTHER_RW = 0o066


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing; take read and write away from group and
    others if it exists (search permission stays, e.g. for the embedded PostgreSQL's system
    user to reach its PGDATA under root)."""
    for missing in reversed([p for p in (path, *path.parents) if not p.exists()]):
        missing.mkdir(mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & _GROUP_OTHER_RW:
        path.chmod(mode & ~_GROUP_OTHER_RW)
    return path


def restrict_files(directory: Path) -> None:
    """Make everything under ``directory`` its owner's only (files 0600, directories 0700
    at most), e.g. data an older version wrote with the default umask."""
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            path = Path(root, name)
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                path.chmod(stat.S_IMODE(st.st_mode) & 0o700)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """The secret kept in ``path``, created (random, mode 0600) on first use.

    Concurrent first uses agree on one secret: each writes a private temporary file and
    links it into place, and whoever loses the race reads the winner's.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); now 0600", path, mode)
        path.chmod(0o600)
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it to have a new secret generated")
    return value
