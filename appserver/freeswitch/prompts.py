"""Engine-neutral prompts <-> FreeSWITCH dialplan applications, both directions.

The driver turns a :class:`ivr.calls.Prompt` into one application call; the simulator turns
the application back into the neutral ``kind:value`` form its transcript records.

=========  ===========================================  ======================
kind       application and argument                     example
=========  ===========================================  ======================
file       ``playback <name>.wav`` (extension kept)     ``ivr/welcome.wav``
tts        ``speak flite|kal|<text>``                   ``flite|kal|Hello``
digits     ``say <lang> number iterated <digits>``      ``en number iterated 42``
number     ``say <lang> number pronounced <n>``         ``en number pronounced 42``
silence    ``playback silence_stream://<ms>``           ``silence_stream://500``
=========  ===========================================  ======================

A file is a sound name relative to FreeSWITCH's sounds directory (``ivr.model.SOUND_NAME_RE``):
never an absolute path, ``..`` or a URL (``http://``, ``shout://`` ...).

A Play's consecutive files and silences go to the engine as one application,
``playback file_string://a.wav!silence_stream://500!b.wav`` (:func:`to_apps`): FreeSWITCH
runs one application and sends one completion for them instead of one each. Real
FreeSWITCH 1.10.12 resolves each name against the sounds directory as ``playback`` does,
skips a missing file and still answers ``FILE PLAYED``; only when none can be played does it
answer ``FILE NOT FOUND`` (as Asterisk does for a multi-media playback).
"""

from __future__ import annotations

import posixpath

from ivr.calls import Prompt
from ivr.model import SOUND_NAME_RE

TTS_ENGINE = "flite"
TTS_VOICE = "kal"


def to_app(prompt: Prompt, language: str = "en") -> tuple[str, str]:
    """``(application, argument)`` playing ``prompt``."""
    kind, value = prompt.kind, prompt.value
    if kind == "file":
        if not SOUND_NAME_RE.fullmatch(value):  # never a path outside the sounds, or a URL
            raise ValueError(f"file prompt {value[:80]!r} is not a relative sound name")
        return "playback", value if posixpath.splitext(value)[1] else f"{value}.wav"
    if kind == "tts":
        return "speak", f"{TTS_ENGINE}|{TTS_VOICE}|{value}"
    if kind == "digits":
        return "say", f"{language} number iterated {value}"
    if kind == "number":
        return "say", f"{language} number pronounced {value}"
    if kind == "silence":
        return "playback", f"silence_stream://{int(float(value))}"
    raise ValueError(f"unknown prompt kind {kind!r}")


FILE_STRING = "file_string://"


def to_apps(prompts: tuple[Prompt, ...], language: str = "en"
            ) -> tuple[list[tuple[str, str]], list[str]]:
    """The applications playing ``prompts`` in order (consecutive files and silences joined
    in one ``file_string://``), and why each prompt it could not turn into one was skipped."""
    apps: list[tuple[str, str]] = []
    refused: list[str] = []
    files: list[str] = []

    def flush() -> None:
        if files:
            apps.append(("playback", files[0] if len(files) == 1
                         else FILE_STRING + "!".join(files)))
            files.clear()

    for prompt in prompts:
        try:
            app, arg = to_app(prompt, language)
        except ValueError as exc:
            refused.append(str(exc))
            continue
        if app == "playback":
            files.append(arg)
        else:
            flush()
            apps.append((app, arg))
    flush()
    return apps, refused


def file_string_parts(arg: str) -> list[str]:
    """The files of a ``playback`` argument, in order (one unless it is a file_string)."""
    return arg.removeprefix(FILE_STRING).split("!") if arg.startswith(FILE_STRING) else [arg]


def from_app(app: str, arg: str) -> str | None:
    """The neutral ``kind:value`` of a prompt application, or None if it is not one."""
    if app == "playback":
        if arg.startswith("silence_stream://"):
            return "silence:" + arg.removeprefix("silence_stream://").split(",")[0]
        if arg.startswith("local_stream://"):
            return None  # music on hold, not a prompt
        if arg.endswith(".wav") and "://" not in arg:
            return "file:" + arg.removesuffix(".wav")
        return "file:" + arg
    if app == "speak":
        return "tts:" + arg.split("|", 2)[-1]
    if app == "say":
        parts = arg.split(" ", 3)
        if len(parts) == 4:
            return ("digits:" if parts[2] == "iterated" else "number:") + parts[3]
    return None
