"""The states of tasks and backups, the moves allowed between them, and the rules a job's run follows.

service/lifecycle.py is the one place that applies them; nothing else writes a task's or a backup's status.
"""
from __future__ import annotations

import datetime as dt


class IllegalMoveError(RuntimeError):
    """A move the tables below do not allow: a bug in the caller, never the user's doing."""

# Tasks (the operation log)
WAITING, RUNNING = "waiting", "running"
SUCCESS, FAILED, TIMEOUT, SKIPPED, CANCELLED = "success", "failed", "timeout", "skipped", "cancelled"
TASK_FINAL = frozenset({SUCCESS, FAILED, TIMEOUT, SKIPPED, CANCELLED})
TASK_MOVES = {
    WAITING: {RUNNING, CANCELLED, FAILED, TIMEOUT},
    # running -> running: a heartbeat, or another worker taking over a dead one's job;
    # running -> waiting: a retry, or a run an outage cut short (its attempt given back).
    RUNNING: {RUNNING, WAITING, SUCCESS, FAILED, TIMEOUT, CANCELLED},
    **{final: set() for final in TASK_FINAL},
}

# Backups
WAITING_PROTECT, PROTECTING, AVAILABLE, ERROR = "waiting_protect", "protecting", "available", "error"
RESTORING, WAITING_DELETE, DELETING = "restoring", "waiting_delete", "deleting"
BACKUP_MOVES = {
    WAITING_PROTECT: {PROTECTING, ERROR},  # and gone: a cancelled backup's rows are removed
    PROTECTING: {PROTECTING, AVAILABLE, ERROR},  # protecting -> protecting: a retry starts over
    AVAILABLE: {RESTORING, WAITING_DELETE},
    RESTORING: {AVAILABLE},
    WAITING_DELETE: {DELETING, AVAILABLE, ERROR},
    DELETING: {DELETING, AVAILABLE, ERROR},
    ERROR: {WAITING_DELETE},
}
# A cancelled backup's rows are removed; its task keeps no link to it (backup_id cleared, the id kept in
# extra_info["discarded_backup_id"]): "cancelled" is a task status only.


def check_task_move(task_id: str, current: str, new: str) -> str:
    if new not in TASK_MOVES.get(current, ()):
        raise IllegalMoveError(f"task {task_id} cannot go from {current} to {new}")
    return new


def check_backup_move(backup_id: str, current: str, new: str) -> str:
    if new not in BACKUP_MOVES.get(current, ()):
        raise IllegalMoveError(f"backup {backup_id} cannot go from {current} to {new}")
    return new


def owner_alive(heartbeat_time: dt.datetime | None, now: dt.datetime, lease_seconds: float) -> bool:
    """Whether the worker that runs a job still beats. A live worker beats every third of the lease at most, so
    a heartbeat older than half a lease means it is gone: JetStream redelivers a dead worker's job one lease
    after its last beat, and that job is taken at once rather than put back for another lease."""
    return heartbeat_time is not None and (now - heartbeat_time).total_seconds() < lease_seconds / 2


def final_progress(status: str, done: int, total: int) -> tuple[int, int, int]:
    """(bytes_done, bytes_total, percent) of a task that ends: a success did all it had to (done == total,
    100%); any other end shows how far it got."""
    if status == SUCCESS:
        finished = done or total  # what it read is what there was to read (holes, vanished files: not)
        return finished, finished, 100
    done = min(done, total) if total else done
    return done, total, done * 100 // total if total else 0


def running_percent(done: int, total: int) -> int:
    """Below 100 until the task is final: 100% means done."""
    return min(99, done * 100 // total) if total else 0
