"""Fetch the live MenuSet from Redis and follow updates.

The reader holds :attr:`current` (None until a menu set was ever published) and replaces it
when a new version appears: on a PUBLISH on ``callyard:menus``, and by polling every
``poll_interval`` seconds as a safety net (a missed message, a Redis restart). A call keeps
the MenuSet object it started with, so replacing ``current`` never disturbs running calls.
While no menu set is loaded a reader says so at start and then every ``warn_interval``
seconds (:data:`NO_MENUS`): calls to menu numbers are refused until one is published.

    reader = MenuSetReader(redis_client)      # redis.asyncio, or redis.Redis under gevent
    await reader.start()                      # (gevent: appserver.shells.green.run)
    flow = reader.flow_for(call.called)       # None if no such extension

It follows on the shell that goes with its client (:mod:`appserver.shells`): an asyncio task
in the Asterisk worker, a greenlet in the FreeSWITCH worker.

With ``trials=True`` it also follows trial menu sets (:mod:`appserver.menus.trial_calls`): a call
to a live trial number walks that draft.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from appserver.menus import keys
from appserver.menus.trial_calls import TRIAL_TTL, TRIALS, loaded_key, trial_key
from appserver.shells import close, for_client, reply
from ivr.compile import MenuSet
from ivr.machine import IvrCall

log = logging.getLogger("callyard.menus")
Listener = Callable[[MenuSet], None]
MAX_TRIALS = 100  # trial sets a reader keeps (the oldest go first)
NO_MENUS = ("no menu set published: calls to menu numbers are answered 'not in service' "
            "until one is; run `callyard api` (it publishes the menus from PostgreSQL) or "
            "`callyard menus publish`")


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _version(raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


class MenuSetReader:
    """``await start()`` once, ``await stop()`` at shutdown; :meth:`flow_for` per call."""

    def __init__(self, client: Any, *, poll_interval: float = 5.0,
                 warn_interval: float = 60.0, trials: bool = False) -> None:
        self.client = client
        self.shell = for_client(client)
        self.poll_interval = poll_interval
        self.warn_interval = warn_interval
        self.current: MenuSet | None = None
        self.last_error = ""
        self.follows_trials = trials
        self.trials: dict[str, tuple[MenuSet, float]] = {}  # number -> (set, expires at)
        self._listeners: list[Listener] = []
        self._next_warning = 0.0
        self._task: Any = None
        self._stopping = False

    @property
    def version(self) -> int | None:
        return self.current.version if self.current else None

    def on_update(self, listener: Listener) -> None:
        """Call ``listener(menuset)`` after each new version is loaded."""
        self._listeners.append(listener)

    def flow_for(
        self, number: str, *, clock: Callable[[], datetime] | None = None
    ) -> IvrCall | None:
        """A flow for a call to ``number`` on the current menu set (None if none/unknown)."""
        if self.trials and number in self.trials:
            return self._trial_flow(number, clock)
        current = self.current
        return current.flow_for(number, clock=clock) if current is not None else None

    def _trial_flow(self, number: str, clock: Callable[[], datetime] | None
                    ) -> IvrCall | None:
        menuset, expires = self.trials[number]
        if time.time() >= expires:
            del self.trials[number]
            return None
        log.info("trial call into a draft", extra={"number": number})
        return menuset.flow_for(number, clock=clock)

    async def load_trial(self, number: str) -> None:
        """Load trial ``number``'s set (gone or unreadable: forgotten, logged) and count
        this reader in its ``loaded`` key, once: a trial stored between the SUBSCRIBE and
        :meth:`load_trials` reaches the reader twice (found stored, then published), and
        counting it twice would let the API stop waiting before another reader has it."""
        expires = await reply(self.client.zscore(TRIALS, number))
        held = self.trials.get(number)
        if held is not None and expires is not None and held[1] == float(expires):
            return  # this very trial (its expiry is its store's time) is loaded and counted
        doc = await reply(self.client.get(trial_key(number)))
        if expires is None or doc is None:
            self.trials.pop(number, None)
            return
        try:
            menuset = MenuSet.from_json(doc)
        except ValueError as exc:
            log.error("trial menu set unreadable", extra={"number": number, "error": str(exc)})
            return
        self.trials[number] = (menuset, float(expires))
        while len(self.trials) > MAX_TRIALS:
            del self.trials[min(self.trials, key=lambda n: self.trials[n][1])]
        await reply(self.client.incr(loaded_key(number)))
        await reply(self.client.expire(loaded_key(number), TRIAL_TTL))

    async def load_trials(self) -> None:
        """Load every live trial (after subscribing: one may have been published before)."""
        now = time.time()
        self.trials = {n: t for n, t in self.trials.items() if t[1] > now}
        for raw in await reply(self.client.zrangebyscore(TRIALS, now, "+inf")):
            if _text(raw) not in self.trials:
                await self.load_trial(_text(raw))

    def _warn_while_empty(self) -> None:
        """While no menu set is loaded: say so, at most every ``warn_interval`` seconds."""
        if self.current is not None:
            return
        now = time.monotonic()
        if now < self._next_warning:
            return
        self._next_warning = now + self.warn_interval
        log.warning(NO_MENUS, extra={"error": self.last_error} if self.last_error else None)

    def _install(self, version: int, doc: Any) -> MenuSet | None:
        if doc is None:
            self.last_error = f"menu set v{version} is missing from Redis"
            log.error("menu set missing", extra={"version": version})
            return self.current
        try:
            menuset = MenuSet.from_json(doc)
        except ValueError as exc:
            self.last_error = f"menu set v{version}: {exc}"
            log.error("menu set unreadable", extra={"version": version, "error": str(exc)})
            return self.current
        self.current = menuset
        self.last_error = ""
        log.info("menu set loaded", extra={"version": menuset.version})
        for listener in self._listeners:
            try:
                listener(menuset)
            except Exception:
                log.exception("menu set listener failed")
        return menuset


    async def refresh(self) -> MenuSet | None:
        """Load the live version if it differs from :attr:`current`; the current MenuSet."""
        version = _version(await reply(self.client.get(keys.CURRENT)))
        if version is None:
            self.last_error = ""  # Redis answers; nothing is published
        if version is None or version == self.version:
            return self.current
        return self._install(version, await reply(self.client.get(keys.version_key(version))))

    async def start(self) -> None:
        """Load the live version (if Redis answers) and follow updates in the background."""
        try:
            await self.refresh()
        except (redis.RedisError, OSError) as exc:
            self.last_error = f"redis: {exc}"
            log.warning("menu sets not readable yet", extra={"error": str(exc)})
        self._warn_while_empty()
        self._stopping = False
        self._task = self.shell.spawn(self._follow(), "menuset-reader")

    async def stop(self) -> None:
        if self._task is not None:
            # redis-py may swallow a cancellation (seen while SUBSCRIBE is in flight): the
            # loop also ends at its next turn (at most a second), closing its subscription.
            self._stopping = True
            await self.shell.cancel([self._task], 5.0)
            self._task = None

    async def wait_for_version(self, version: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while (self.version or 0) < version:
            if time.monotonic() > deadline:
                return False
            await self.shell.sleep(0.02)
        return True

    async def _follow(self) -> None:
        backoff = 0.5
        while not self._stopping:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [keys.CHANNEL, TRIALS] if self.follows_trials else [keys.CHANNEL]
                await reply(pubsub.subscribe(*channels))
                await self.refresh()  # catch up on what happened before the subscription
                if self.follows_trials:
                    await self.load_trials()
                backoff = 0.5
                next_poll = time.monotonic() + self.poll_interval
                while not self._stopping:
                    message = await reply(
                        pubsub.get_message(timeout=min(1.0, self.poll_interval)))
                    if message is not None and _text(message["channel"]) == TRIALS:
                        await self.load_trial(_text(message["data"]))
                    elif message is not None or time.monotonic() >= next_poll:
                        await self.refresh()
                        next_poll = time.monotonic() + self.poll_interval
                    self._warn_while_empty()
            except (redis.RedisError, OSError) as exc:
                self.shell.honour_cancel()
                self.last_error = f"redis: {exc}"
                log.warning("menu set reader lost Redis; retrying", extra={"error": str(exc)})
                self._warn_while_empty()
                await self.shell.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                with contextlib.suppress(Exception):
                    await close(pubsub)
