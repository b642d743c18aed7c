"""``callyard sounds``: write the sounds Callyard generates, for an engine's sound folder.

    callyard sounds OUT_DIR [--set demo|queue|callyard ...] [--flite PATH]
    callyard sounds --list          # every file each engine needs, generated or stock

Writes ``OUT_DIR/<set>/<name>.wav`` (see :mod:`appserver.sounds`); copy the set folders into
FreeSWITCH's ``<sounds>/en/us/callie/`` or Asterisk's ``<astdatadir>/sounds/en/`` (or give
that folder as OUT_DIR: only the set folders are written). Safe to run again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "write the sounds Callyard plays (flite, 8 kHz WAV) for the engines' sound folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", nargs="?", type=Path, help="folder to write <set>/*.wav into")
    parser.add_argument("--set", action="append", dest="sets", metavar="SET",
                        help="only this set (repeatable; default: all; --list shows them)")
    parser.add_argument("--flite", default="flite", help="flite program (default: %(default)s)")
    parser.add_argument("--list", action="store_true",
                        help="list every sound file each engine needs and where it comes from")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver import sounds

    if args.list:
        for engine in sounds.ENGINES:
            print(f"{engine}: {sounds.SOUND_FOLDERS[engine]}/")
            for s in sounds.required(engine):
                print(f"  {s.file:48} {s.origin} ({s.source})")
        return 0
    if args.out_dir is None:
        print("callyard sounds: give OUT_DIR (or --list)", file=sys.stderr)
        return 2
    try:
        written = sounds.render(args.out_dir, sounds.generated(args.sets), args.flite)
    except (sounds.SoundError, OSError) as exc:
        print(f"callyard sounds: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0
