"""Engine-neutral prompts -> ARI media URIs, and Q.850 causes <-> names."""

from __future__ import annotations

import re

from ivr.calls import Prompt
from ivr.model import SOUND_NAME_RE

_AUDIO_EXT = re.compile(r"\.(wav|gsm|sln\d*|ulaw|alaw|g722|mp3|ogg)$", re.IGNORECASE)

CAUSE_NAMES: dict[int, str] = {
    0: "NORMAL_CLEARING",
    1: "UNALLOCATED_NUMBER",
    3: "NO_ROUTE_DESTINATION",
    16: "NORMAL_CLEARING",
    17: "USER_BUSY",
    18: "NO_USER_RESPONSE",
    19: "NO_ANSWER",
    20: "SUBSCRIBER_ABSENT",
    21: "CALL_REJECTED",
    27: "DESTINATION_OUT_OF_ORDER",
    31: "NORMAL_UNSPECIFIED",
    32: "NORMAL_CLEARING",  # soft hangup requested over ARI
    34: "NORMAL_CIRCUIT_CONGESTION",
    38: "NETWORK_OUT_OF_ORDER",
}

# Hangup(cause) -> DELETE /channels/{id}?reason=...
HANGUP_REASONS: dict[str, str] = {
    "NORMAL_CLEARING": "normal",
    "USER_BUSY": "busy",
    "NO_ANSWER": "no_answer",
    "NO_USER_RESPONSE": "no_answer",
    "CALL_REJECTED": "rejected",
    "UNALLOCATED_NUMBER": "unallocated",
    "NORMAL_CIRCUIT_CONGESTION": "congestion",
    "NORMAL_UNSPECIFIED": "normal_unspecified",
}


def cause_name(cause: object) -> str:
    if isinstance(cause, int):
        return CAUSE_NAMES.get(cause, f"CAUSE_{cause}")
    return "NORMAL_CLEARING"


def prompt_media(prompt: Prompt) -> str | None:
    """The ARI media URI for a prompt, or None when Asterisk cannot play it (TTS) or may not
    (a file that is not a relative sound name: an absolute path, "..", a URL, or a comma,
    which would split it into more media)."""
    value = prompt.value.strip()
    if prompt.kind == "file":
        return f"sound:{_AUDIO_EXT.sub('', value)}" if SOUND_NAME_RE.fullmatch(value) else None
    if prompt.kind == "digits":
        return f"digits:{value}" if re.fullmatch(r"[0-9*#A-Da-d]+", value) else None
    if prompt.kind == "number":
        return f"number:{value}" if re.fullmatch(r"-?[0-9]+", value) else None
    if prompt.kind == "silence":
        try:
            millis = float(value)
        except ValueError:
            return None
        # Asterisk ships sounds silence/1 .. silence/10 (seconds).
        return f"sound:silence/{max(1, min(10, round(millis / 1000)))}"
    return None  # tts: ARI has no speech synthesis without extra modules
