"""Trial menu sets: a draft that only test calls hear ("Try it" in the admin menu editor).

The API compiles the draft set with one more extension, a *trial number* (``*99`` and 8
random digits), stores it in Redis for :data:`TRIAL_TTL` seconds and PUBLISHes the number:

* ``callyard:menus:trial:<number>`` -- the MenuSet JSON (expires with the trial);
* ``callyard:menus:trials`` -- sorted set of trial numbers by expiry (a reader that
  (re)subscribes loads the live ones from it), and the channel the numbers are published on;
* ``callyard:menus:trial:<number>:loaded`` -- how many readers loaded it: the API waits for
  every reader the PUBLISH reached, so the first call to the number finds it everywhere.

Workers load trial sets only with ``CALLYARD_MENU_TRIALS`` on (``callyard dev`` turns it
on): a call to a trial number then walks the draft; without it, or once the trial expired,
the number is not in service. Callers of the live numbers never reach a draft.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from dataclasses import dataclass
from typing import Any

from appserver.menus import keys
from ivr.compile import MenuSet, compile_menuset
from ivr.model import ExtensionDef, MenuSource

TRIAL_PREFIX = "*99"
TRIAL_DIGITS = 8
TRIAL_TTL = 1800  # seconds a trial number answers
TRIALS = f"{keys.PREFIX}:trials"  # sorted set (number -> expiry) and channel


def trial_key(number: str) -> str:
    return f"{keys.PREFIX}:trial:{number}"


def loaded_key(number: str) -> str:
    return f"{keys.PREFIX}:trial:{number}:loaded"


def is_trial_number(number: str) -> bool:
    digits = number[len(TRIAL_PREFIX):]
    return (number.startswith(TRIAL_PREFIX) and len(digits) == TRIAL_DIGITS
            and digits.isdigit())


@dataclass(frozen=True)
class TrialCall:
    number: str  # dial it to walk the draft
    menu: str
    expires_at: float  # Unix time
    readers: int  # readers (workers with trial calls on) that loaded it


def compile_trial(source: MenuSource, menu: str, number: str) -> MenuSet:
    """``source`` with ``number`` entering ``menu``; raises ``MenuSetInvalid``."""
    return compile_menuset(dataclasses.replace(
        source, extensions=(*source.extensions, ExtensionDef(number, "menu", menu))))


async def store_trial(redis: Any, source: MenuSource, menu: str, *, wait: float = 3.0
                      ) -> TrialCall:
    """Compile ``source`` (validated) with a new trial number entering ``menu``, store it
    and tell the workers; the trial number answers for :data:`TRIAL_TTL` seconds. Returns
    once every reader the news reached loaded it (at most ``wait`` seconds)."""
    number = TRIAL_PREFIX + f"{secrets.randbelow(10 ** TRIAL_DIGITS):0{TRIAL_DIGITS}d}"
    doc = compile_trial(source, menu, number).to_json()
    now = time.time()
    expires = now + TRIAL_TTL
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(trial_key(number), doc, ex=TRIAL_TTL)
        pipe.zremrangebyscore(TRIALS, "-inf", now)
        pipe.zadd(TRIALS, {number: expires})
        pipe.publish(TRIALS, number)
        *_, reached = await pipe.execute()
    deadline = time.monotonic() + wait
    while (loaded := int(await redis.get(loaded_key(number)) or 0)) < reached:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    return TrialCall(number, menu, expires, loaded)
