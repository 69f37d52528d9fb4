"""The command's exit codes: one per class of gRPC status, one for a watched task that did not succeed, one for
a backup that left resources out."""
from __future__ import annotations

import grpc

OK = 0
OTHER = 1          # any other failure: INTERNAL, UNKNOWN, UNIMPLEMENTED, a broken connection, ...
USAGE = 2          # bad arguments (argparse) or missing configuration
INVALID_ARGUMENT = 3
NOT_FOUND = 4
ALREADY_EXISTS = 5
FAILED_PRECONDITION = 6
NOT_ALLOWED = 7
RESOURCE_EXHAUSTED = 8
UNAVAILABLE = 9
DATA_LOSS = 10
TASK_UNSUCCESSFUL = 11
SKIPPED = 12       # `cbr backup create` skipped some or all of the resources asked for (busy, gone, ...)
AMBIGUOUS = 13     # a name (or short id) given for an id matched more than one object
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

BY_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION: FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED: FAILED_PRECONDITION,  # a concurrent change won; the state was not as expected
    grpc.StatusCode.PERMISSION_DENIED: NOT_ALLOWED,
    grpc.StatusCode.UNAUTHENTICATED: NOT_ALLOWED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: DATA_LOSS,
}


def for_status(code: grpc.StatusCode) -> int:
    return BY_STATUS.get(code, OTHER)


HELP = """\
exit codes:
  0   success
  1   any other error (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)
  2   usage error, or missing configuration
  3   INVALID_ARGUMENT, OUT_OF_RANGE
  4   NOT_FOUND
  5   ALREADY_EXISTS
  6   FAILED_PRECONDITION, ABORTED
  7   PERMISSION_DENIED, UNAUTHENTICATED
  8   RESOURCE_EXHAUSTED
  9   UNAVAILABLE, DEADLINE_EXCEEDED
  10  DATA_LOSS
  11  a watched task or replication ended failed, cancelled or timed out
  12  `backup create` skipped a resource (busy, gone, all disks excluded): some or
      nothing was backed up; each skipped resource and why is printed (11 wins over 12)
  13  a name given for an id matched more than one object (the candidates are
      listed; give the id); a name that matches nothing exits 4
  130 interrupted (Ctrl-C; the task itself keeps running)
"""
