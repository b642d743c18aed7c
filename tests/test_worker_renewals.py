"""The gap rule shared by the queue runtime's leases and the call records' heartbeat
(appserver/worker/renewals.py): renewals on time judge as usual; after a gap longer than two
periods and a second, nobody is judged dead for a lifetime."""

from __future__ import annotations

import pytest

from appserver.worker.renewals import Renewals


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("appserver.worker.renewals.time.monotonic", lambda: now[0])
    return now


def test_renewals_on_time_keep_judging(clock: list[float]) -> None:
    renewals = Renewals(period=2, lifetime=8)
    for _ in range(5):
        clock[0] += 2 * 2 + 1  # late, but not a gap
        assert renewals.renewed() == 0
        assert renewals.judging()
    assert renewals.last == clock[0]


def test_after_a_gap_nobody_is_judged_dead_for_a_lifetime(clock: list[float]) -> None:
    renewals = Renewals(period=2, lifetime=8)
    clock[0] += 2 * 2 + 1.5
    assert renewals.renewed() == 5.5
    assert not renewals.judging()
    for _ in range(3):  # renewals on time meanwhile do not shorten the wait
        clock[0] += 2
        assert renewals.renewed() == 0
        assert not renewals.judging()
    clock[0] += 1.9
    assert not renewals.judging()
    clock[0] += 0.1
    assert renewals.judging()
