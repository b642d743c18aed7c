"""Record the demo IVR's prompts as sound files both engines play.

The demo menus (``appserver.demo``) play ``file:demo/<name>`` prompts; their wording is in
``appserver.demo.PROMPT_TEXT``. This script speaks each text with flite (voice ``kal``:
8 kHz, 16-bit, mono - the format Asterisk plays from ``.wav`` and FreeSWITCH takes as is)
and writes ``<out>/<name>.wav``. The compose stack runs it once in the ``setup`` service into
the ``prompts`` volume, which is mounted as ``demo/`` in both engines' sound folders.

    python make_demo_prompts.py OUT_DIR [--flite PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path

PREFIX = "demo/"
RATE = 8000


class PromptError(Exception):
    """A prompt could not be rendered; the message says which and why."""


def render(out_dir: Path, texts: Mapping[str, str], flite: str = "flite") -> list[Path]:
    """Write one WAV per prompt into ``out_dir``; return the files written."""
    names = {}
    for prompt, text in texts.items():
        name = prompt.removeprefix(PREFIX)
        if not prompt.startswith(PREFIX) or not name or "/" in name or name.startswith("."):
            raise PromptError(f"{prompt!r}: expected {PREFIX}<name>")
        if not text.strip():
            raise PromptError(f"{prompt!r}: empty text")
        names[name] = text
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(names.items()):
        target = out_dir / f"{name}.wav"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".wav", dir=out_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            result = subprocess.run(
                [flite, "-voice", "kal", "-t", text, "-o", str(tmp)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0:
                raise PromptError(f"{name}: flite failed: {result.stderr.strip()}")
            _check_format(tmp, name)
            tmp.chmod(0o644)
            tmp.replace(target)  # readers never see a half-written file
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written


def _check_format(path: Path, name: str) -> None:
    try:
        with wave.open(str(path)) as w:
            fmt = (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise PromptError(f"{name}: flite wrote no valid WAV ({exc})") from None
    if fmt[:3] != (1, 2, RATE) or fmt[3] == 0:
        raise PromptError(f"{name}: expected 8 kHz 16-bit mono audio, got {fmt}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the .wav files")
    parser.add_argument("--flite", default=shutil.which("flite") or "flite")
    args = parser.parse_args(argv)

    from appserver.demo import PROMPT_TEXT

    try:
        written = render(args.out_dir, PROMPT_TEXT, args.flite)
    except (PromptError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"make_demo_prompts: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
