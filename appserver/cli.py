"""The ``callyard`` command.

Each sub-command lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args, settings) -> int`` (and ``PASS_THROUGH = True`` to get unknown arguments in
``args.extra``). Only the module of the command given is imported (all of them for
``callyard --help``), so the gevent worker can monkey-patch before anything else is loaded
and a production command never loads dev-only code (appserver.devkit); keep their top level
free of heavy imports.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

from appserver import __version__
from appserver.logs import setup as setup_logging
from appserver.settings import SettingsError, load_settings

# name -> module implementing it. Only commands that work are listed here.
COMMANDS: dict[str, str] = {
    "migrate": "appserver.store.migrate_command",
    "psql": "appserver.store.psql_command",
    "freeswitch": "appserver.freeswitch.command",
    "asterisk": "appserver.asterisk.command",
    "render-config": "appserver.render_config_command",
    "seed-demo": "appserver.devkit.demo_command",
    "sounds": "appserver.sounds_command",
    "menus": "appserver.menus.command",
    "api": "appserver.api.command",
    "livekit-setup": "appserver.agents.setup_command",
    "api-key": "appserver.api.keys_command",
    "dev": "appserver.devkit.dev_command",
    "bench": "appserver.devkit.bench_command",
    "sim": "appserver.devkit.sim_command",
    "cdr-writer": "appserver.cdr.command",
    "recordings": "appserver.recordings_command",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with every command's arguments, or only ``command``'s when it is one."""
    parser = argparse.ArgumentParser(
        prog="callyard",
        description="Call-control application server for FreeSWITCH and Asterisk.",
        epilog="Configuration comes from CALLYARD_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"callyard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [command] if command in COMMANDS else COMMANDS:
        module = importlib.import_module(COMMANDS[name])
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds it like Ctrl-C, so its clean-up runs (a tool
    stops the embedded server it started). Commands that serve install their own handling."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (a test calling main()): signals are not ours
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((arg for arg in argv if not arg.startswith("-")), None))
    args, extra = parser.parse_known_args(argv)
    # A command with PASS_THROUGH = True receives the arguments it does not know (callyard psql).
    if extra and not getattr(getattr(args, "_module", None), "PASS_THROUGH", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"callyard: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        with _sigterm_interrupts():
            return int(args._module.run(args, settings) or 0)
    except SettingsError as exc:  # e.g. a production command without its storage URLs
        print(f"callyard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
