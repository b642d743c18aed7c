"""A worker's own renewals in Redis, and when it may judge other workers dead.

Each worker renews something in Redis every ``period`` seconds (the queue runtime its
callers' leases, the FreeSWITCH call records its heartbeat); one whose renewal lapsed for
``lifetime`` is judged dead and its calls are taken. A worker that could not renew its own
for longer than expected (Redis unreachable, or the worker stalled) finds the others' lapsed
too, and that proves nothing: they could not renew either. So after such a gap it judges
nobody dead until they have had a ``lifetime`` to renew theirs.
"""

from __future__ import annotations

import time


class Renewals:
    """The last renewal's time, and the gap rule above."""

    __slots__ = ("_judge_from", "last", "lifetime", "period")

    def __init__(self, period: float, lifetime: float) -> None:
        self.period = period
        self.lifetime = lifetime
        self.last = time.monotonic()  # of the last renewal
        self._judge_from = 0.0  # (monotonic) no other worker is judged dead before

    def renewed(self) -> float:
        """Note a renewal now. Returns the gap since the one before when it was too long
        (more than two periods and a second: then nobody is judged dead for a lifetime),
        else 0."""
        now = time.monotonic()
        gap, self.last = now - self.last, now
        if gap <= 2 * self.period + 1:
            return 0.0
        self._judge_from = now + self.lifetime
        return gap

    def judging(self) -> bool:
        """Whether a worker whose renewal lapsed counts as dead now."""
        return time.monotonic() >= self._judge_from
