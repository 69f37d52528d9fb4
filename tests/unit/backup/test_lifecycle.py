"""The job lifecycle's rules: allowed moves, the takeover rule, and honest final progress."""
from __future__ import annotations

import datetime as dt

import pytest

from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.backups import BACKUP_STATUSES
from cbr_backup.domain.model import FINAL_TASK_STATUSES, TASK_STATUSES

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_the_tables_cover_every_status():
    assert set(lc.TASK_MOVES) == set(TASK_STATUSES)
    assert lc.TASK_FINAL == FINAL_TASK_STATUSES
    assert set(lc.BACKUP_MOVES) | {lc.WAITING_PROTECT} <= set(BACKUP_STATUSES)
    for targets in lc.BACKUP_MOVES.values():
        assert targets <= set(BACKUP_STATUSES)


@pytest.mark.parametrize("current,new", [("waiting", "running"), ("running", "waiting"), ("running", "success"),
                                         ("running", "running"), ("waiting", "cancelled"), ("running", "timeout")])
def test_allowed_task_moves(current, new):
    assert lc.check_task_move("t", current, new) == new


@pytest.mark.parametrize("final", sorted(FINAL_TASK_STATUSES))
@pytest.mark.parametrize("new", sorted(TASK_STATUSES))
def test_a_final_task_never_moves(final, new):
    with pytest.raises(lc.IllegalMoveError, match=f"from {final} to {new}"):
        lc.check_task_move("t", final, new)


def test_a_waiting_task_does_not_succeed_without_running():
    with pytest.raises(lc.IllegalMoveError):
        lc.check_task_move("t", "waiting", "success")


@pytest.mark.parametrize("current,new,ok", [
    ("waiting_protect", "protecting", True), ("protecting", "available", True), ("protecting", "error", True),
    ("available", "restoring", True), ("restoring", "available", True), ("available", "waiting_delete", True),
    ("waiting_delete", "deleting", True), ("deleting", "deleting", True), ("error", "waiting_delete", True),
    ("available", "protecting", False), ("restoring", "deleting", False), ("error", "available", False),
    ("waiting_protect", "available", False), ("deleting", "restoring", False)])
def test_backup_moves(current, new, ok):
    if ok:
        assert lc.check_backup_move("b", current, new) == new
    else:
        with pytest.raises(lc.IllegalMoveError):
            lc.check_backup_move("b", current, new)


def test_a_dead_workers_job_is_taken_when_redelivered_after_one_lease():
    lease = 30.0
    # JetStream redelivers one lease after the last in_progress; the heartbeat was written just after it.
    just_under_a_lease = NOW - dt.timedelta(seconds=lease - 0.05)
    assert not lc.owner_alive(just_under_a_lease, NOW, lease)
    # A live worker beats every third of the lease at most.
    assert lc.owner_alive(NOW - dt.timedelta(seconds=lease / 3), NOW, lease)
    assert not lc.owner_alive(None, NOW, lease)


@pytest.mark.parametrize("status,done,total,expected", [
    ("success", 36 << 20, 64 << 20, (36 << 20, 36 << 20, 100)),   # holes were not read: what was read was all
    ("success", 0, 0, (0, 0, 100)),                                # a delete: no bytes, done
    ("success", 0, 10, (10, 10, 100)),
    ("failed", 500 << 20, 500 << 20, (500 << 20, 500 << 20, 100)),  # it failed after reading everything
    ("failed", 125, 500, (125, 500, 25)),
    ("failed", 0, 0, (0, 0, 0)),
    ("cancelled", 600, 500, (500, 500, 100)),
])
def test_final_progress_agrees_with_itself(status, done, total, expected):
    assert lc.final_progress(status, done, total) == expected
    done, total, percent = lc.final_progress(status, done, total)
    assert (status != "success") or (done == total and percent == 100)


def test_running_percent_stays_below_100():
    assert lc.running_percent(10, 10) == 99 and lc.running_percent(5, 10) == 50 and lc.running_percent(3, 0) == 0
