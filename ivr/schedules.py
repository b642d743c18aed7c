"""Business hours and closures in an IANA time zone.

A schedule is open when the *local wall-clock time* in its zone falls inside one of the
intervals of that weekday and the local date is not inside a closure. Converting the
instant with :mod:`zoneinfo` makes this DST-correct by construction: on a spring-forward
day the skipped hour simply never occurs, and on a fall-back day the repeated hour is
open (or closed) both times it occurs.

Intervals are half-open ``[opens, closes)``. ``closes`` of ``00:00`` means midnight at the
end of the day; ``closes`` earlier than ``opens`` is an overnight interval that belongs to
the weekday it starts on (``22:00-06:00`` on Friday covers Friday 22:00 to Saturday 06:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.model import ClosureDef, HoursDef, ScheduleDef

ScheduleState = Literal["open", "closed", "holiday"]
_MIDNIGHT = time(0, 0)


def load_zone(name: str) -> ZoneInfo:
    """The zone called ``name``; raises ``ValueError`` with a clear message if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC"
        ) from None


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    timezone: str
    hours: tuple[HoursDef, ...]
    closures: tuple[ClosureDef, ...]

    @classmethod
    def from_def(cls, d: ScheduleDef) -> Schedule:
        load_zone(d.timezone)
        return cls(d.name, d.timezone, tuple(d.hours), tuple(d.closures))

    def local(self, at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError("schedule checks need an aware datetime (with tzinfo)")
        return at.astimezone(_zone(self.timezone))

    def closure_on(self, day: date) -> ClosureDef | None:
        for c in self.closures:
            if c.starts_on <= day <= c.ends_on:
                return c
        return None

    def holiday(self, at: datetime) -> ClosureDef | None:
        """The closure covering the local date of ``at``, if any."""
        return self.closure_on(self.local(at).date())

    def _within_hours(self, local: datetime) -> bool:
        day, now = local.weekday(), local.time().replace(tzinfo=None)
        yesterday = (day - 1) % 7
        for h in self.hours:
            overnight = h.closes != _MIDNIGHT and h.closes <= h.opens
            if h.weekday == day:
                if h.closes == _MIDNIGHT or overnight:
                    if now >= h.opens:
                        return True
                elif h.opens <= now < h.closes:
                    return True
            # The tail of last night's interval, unless last night was a closure.
            if (
                overnight
                and h.weekday == yesterday
                and now < h.closes
                and self.closure_on(local.date() - timedelta(days=1)) is None
            ):
                return True
        return False

    def state(self, at: datetime) -> ScheduleState:
        local = self.local(at)
        if self.closure_on(local.date()) is not None:
            return "holiday"
        return "open" if self._within_hours(local) else "closed"

    def is_open(self, at: datetime) -> bool:
        return self.state(at) == "open"


_zones: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    zone = _zones.get(name)
    if zone is None:
        zone = _zones[name] = load_zone(name)
    return zone
