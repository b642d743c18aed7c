"""Every sound Callyard itself plays, per engine, and where each one comes from.

Callyard plays sounds of its own: the queue announcements, the call-flow apps' error prompt,
the polite endings of both drivers and dialplans, the spoken numbers of announcements and the
demo IVR's prompts. Each is either

* **stock**: a file of the engine's standard sound pack (FreeSWITCH's ``en-us-callie``,
  Asterisk's core sounds), used only where that engine alone plays it; or
* **generated**: spoken with flite (voice ``kal``: 8 kHz, 16-bit, mono WAV, which both
  engines play from ``<name>.wav``) by ``callyard sounds`` into a folder Callyard owns (a
  *set*: ``demo/``, ``queue/``, ``callyard/``), the same files for both engines.

:func:`required` lists, per engine, every file the product plays and its origin;
:func:`render` writes generated sounds. They belong in the engine's sound folder:
FreeSWITCH ``<sounds>/en/us/callie/``, Asterisk ``<astdatadir>/sounds/en/``.
A sound added in code needs its entry here (``tests/test_sounds.py`` checks).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Engine = Literal["freeswitch", "asterisk"]
ENGINES: tuple[Engine, ...] = ("freeswitch", "asterisk")
SOUND_FOLDERS: dict[Engine, str] = {
    "freeswitch": "<sounds>/en/us/callie",  # e.g. /usr/share/freeswitch/sounds/en/us/callie
    "asterisk": "<astdatadir>/sounds/en",  # e.g. /var/lib/asterisk/sounds/en
}
STOCK_PACKS: dict[Engine, str] = {
    "freeswitch": "FreeSWITCH sounds en-us-callie",
    "asterisk": "Asterisk core sounds (en)",
}

FLITE_VOICE = "kal"
RATE = 8000  # Hz; 16-bit mono

# ------------------------------------------------------------------ generated (both engines)

QUEUE_TEXT = {  # appserver.queues.caller_flow: announcement() "... <number> ...", callbacks
    "queue/position": "You are caller number",
    "queue/estimated_wait": "Your estimated wait time is",
    "queue/minute": "minute.",
    "queue/minutes": "minutes.",
    # Callback in queue (caller_flow.CALLBACK_PROMPTS): "... press <key>", "... at <digits>"
    "queue/callback_offer": "To be called back without losing your place in line, press",
    "queue/callback_confirm": "We will call you back at",
    "queue/callback_confirm_keys": "To confirm, press 1. To enter another number, press 2.",
    "queue/callback_enter": "Please enter the number to call you back at, then press pound.",
    "queue/callback_registered": "Thank you. We will call you back when it is your turn. "
    "Goodbye.",
    "queue/callback_hello": "Hello, this is the call back you asked for. "
    "Please hold while we connect you to an agent.",
}
CALLYARD_TEXT = {  # ivr.app.DEFAULT_ERROR_PROMPT: a call-flow app failed on this call
    "callyard/cannot-complete": "We are sorry, your call cannot be completed right now. "
    "Please try again later.",
}
DEMO_TEXT = {  # the demo IVR (appserver/devkit/demo.py, `callyard seed-demo`)
    "demo/welcome": "Welcome to Callyard.",
    "demo/main-menu": "For sales, press 1. For support, press 2. To reach Alice, press 3. "
    "To leave a message for support, press 4. To hear this again, press 9.",
    "demo/sales-menu": "Sales. For new orders, press 1. For an existing order, press 2. "
    "To return to the main menu, press star.",
    "demo/sales-closed": "Sales is closed. Our hours are 9 to 5 Eastern, Monday to Friday. "
    "To speak with support, press 1. To return to the main menu, press star.",
    "demo/connecting-support": "Connecting you to support.",
    "demo/calling-alice": "Calling Alice.",
    "demo/calling-sales": "Calling our sales team.",
    "demo/transferring": "Transferring you.",
    "demo/invalid": "Sorry, that is not a valid choice.",
    "demo/no-input": "Sorry, I did not hear your choice.",
}
VOICEMAIL_TEXT = {  # ivr.voicemail (ivr.model VOICEMAIL_*): the voicemail action
    "voicemail/greeting": "Please leave a message after the tone. Press pound when you are "
    "done.",
    "voicemail/review": "To keep your message, press 1. To record it again, press 2.",
    "voicemail/saved": "Your message has been saved. Goodbye.",
}
RECORDING_TEXT = {  # a queue's recording_announcement (the demo's support queue)
    "recording/announcement": "This call may be recorded for quality and training.",
}
SETS: dict[str, Mapping[str, str]] = {  # set (its folder) -> sound name -> what it says
    "callyard": CALLYARD_TEXT,
    "demo": DEMO_TEXT,
    "queue": QUEUE_TEXT,
    "recording": RECORDING_TEXT,
    "voicemail": VOICEMAIL_TEXT,
}

# ------------------------------------------------------------------ stock (one engine each)

# number:N prompts (queue position and minutes) are said from these on both engines.
_SAY_NUMBER = {
    f"digits/{word}": "number: prompts (queue announcements)"
    for word in (*range(20), *range(20, 100, 10), "hundred", "thousand", "million")
}
STOCK: dict[Engine, dict[str, str]] = {  # engine -> sound name -> where Callyard plays it
    "freeswitch": {
        "ivr/ivr-call_cannot_be_completed_as_dialed": "no worker or no app takes the call "
        "(dialplan fallback, driver fallback_prompt)",
        **_SAY_NUMBER,
    },
    "asterisk": {
        "cannot-complete-temp-error": "no worker, or the call's flow failed "
        "(dialplan callyard-unavailable,s)",
        "ss-noservice": "no app serves the number (dialplan callyard-unavailable,noservice)",
        "beep": "before a recording (ARI channel record, beep=true)",
        **_SAY_NUMBER,
    },
}


@dataclass(frozen=True, slots=True)
class Sound:
    """One file an engine must have for Callyard: ``<sound folder>/<name>.wav``."""

    engine: Engine
    name: str  # as played: "queue/position"
    origin: Literal["generated", "stock"]
    source: str  # generated: its set ("queue"); stock: the pack that ships it
    text: str  # generated: what it says; stock: where Callyard plays it

    @property
    def file(self) -> str:
        return f"{self.name}.wav"


def required(engine: Engine) -> list[Sound]:
    """Every file ``engine`` must have for Callyard, by name: generated and stock."""
    if engine not in STOCK:
        raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    sounds = [Sound(engine, name, "generated", set_name, text)
              for set_name, texts in SETS.items() for name, text in texts.items()]
    sounds += [Sound(engine, name, "stock", STOCK_PACKS[engine], used)
               for name, used in STOCK[engine].items()]
    return sorted(sounds, key=lambda s: s.name)


def generated(sets: Iterable[str] | None = None) -> dict[str, str]:
    """Name -> text of the generated sounds of ``sets`` (all when None)."""
    chosen = list(SETS) if sets is None else list(sets)
    unknown = [s for s in chosen if s not in SETS]
    if unknown:
        raise SoundError(f"unknown set {', '.join(unknown)}: expected {', '.join(SETS)}")
    return {name: text for s in chosen for name, text in SETS[s].items()}


# ------------------------------------------------------------------ rendering with flite


class SoundError(Exception):
    """A sound could not be rendered; the message says which and why."""


_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*/[a-zA-Z0-9][a-zA-Z0-9_-]*")


def render(out_dir: Path, texts: Mapping[str, str], flite: str = "flite") -> list[Path]:
    """Write ``<out_dir>/<set>/<name>.wav`` for each ``"<set>/<name>": text``; the paths.

    Each file is replaced atomically, so running again (or while an engine reads the folder)
    is safe. Names and texts are all checked before anything is written.
    """
    for name, text in texts.items():
        if not _NAME.fullmatch(name):
            raise SoundError(f"{name!r}: expected <set>/<name> (letters, digits, _ or -)")
        if not text.strip():
            raise SoundError(f"{name!r}: empty text")
    program = shutil.which(flite)
    if program is None:
        raise SoundError(f"flite not found ({flite!r}): install it (Debian/Ubuntu: "
                         "apt-get install flite) or pass --flite PATH")
    return [_speak(out_dir / f"{name}.wav", text, program) for name, text in sorted(texts.items())]


def _speak(target: Path, text: str, flite: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".wav", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            result = subprocess.run([flite, "-voice", FLITE_VOICE, "-t", text, "-o", str(tmp)],
                                    capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise SoundError(f"{target.stem}: flite took more than 60 s") from None
        if result.returncode != 0:
            raise SoundError(f"{target.stem}: flite failed: {result.stderr.strip()}")
        _check_format(tmp, target.stem)
        tmp.chmod(0o644)
        tmp.replace(target)  # readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _check_format(path: Path, name: str) -> None:
    try:
        with wave.open(str(path)) as w:
            fmt = (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise SoundError(f"{name}: flite wrote no valid WAV ({exc})") from None
    if fmt[:3] != (1, 2, RATE) or fmt[3] == 0:
        raise SoundError(f"{name}: expected 8 kHz 16-bit mono audio, got {fmt}")
