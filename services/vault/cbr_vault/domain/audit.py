"""The audit trail as the vault service keeps it: records, the query a listing makes, and who may see what."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cbr_common.auth import ROLE_AUDITOR, ROLE_SERVICE
from cbr_vault.domain import errors

# The gRPC status codes by name (the domain does not import grpc).
STATUS_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
OUTCOME_OK, OUTCOME_ERROR = "ok", "error"
# Who sees every project's trail: the operator's auditor, and CBR's own services.
OPERATOR_ROLES = frozenset({ROLE_AUDITOR, ROLE_SERVICE})
METHOD_RE = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
SERVICE_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.[A-Z][A-Za-z0-9]{0,63}")
MAX_FILTER_CHARS = 300


@dataclass(frozen=True)
class AuditedCall:
    """One state-changing call, as cbr_common.audit recorded it."""
    event_id: str
    time: dt.datetime        # when the call arrived
    project_id: str
    subject: str
    roles: tuple[str, ...]
    service: str
    method: str
    ids: tuple[tuple[str, str], ...]  # (field, id)
    request_id: str
    code: str
    message: str
    cbr_code: str
    duration_ms: int
    peer: str


@dataclass(frozen=True)
class AuditQuery:
    project_id: str | None       # None: every project
    service: str = ""
    method: str = ""
    resource_id: str = ""
    subject: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    code: str = ""               # one status code
    errors_only: bool = False    # any code but OK
    limit: int = 1000
    offset: int = 0


def visible_project(caller_project: str, caller_roles: frozenset[str], asked: str) -> str | None:
    """The project whose events the caller may list (None: every project). A project's users see their own
    project's calls, as a cloud's trace service shows a tenant its own; another project is refused, not hidden."""
    if caller_roles & OPERATOR_ROLES:
        return asked or None
    if asked and asked != caller_project:
        raise errors.AuditScopeError("the audit trail of another project needs the cbr_auditor role")
    return caller_project


def parse_outcome(text: str) -> tuple[str, bool]:
    """'' (any), 'ok', 'error' (any other code) or a status code name in any case -> (code, errors_only)."""
    value = text.strip()
    if not value:
        return "", False
    if value.lower() == OUTCOME_ERROR:
        return "", True
    if value.lower() == OUTCOME_OK:
        return "OK", False
    if value.upper() in STATUS_CODES:
        return value.upper(), False
    raise errors.InvalidAuditFilterError(
        f"outcome must be ok, error or a gRPC status code name (invalid_argument, not_found, ...), got {value[:40]!r}")


def parse_method(text: str) -> tuple[str, str]:
    """'DeleteBackup' or 'cbr.backup.v1.BackupService/DeleteBackup' (a leading '/' is allowed) -> (service,
    method); the service is '' when not given."""
    value = text.strip().lstrip("/")
    if not value:
        return "", ""
    service, _, method = value.rpartition("/")
    if not METHOD_RE.fullmatch(method) or (service and not SERVICE_RE.fullmatch(service)):
        raise errors.InvalidAuditFilterError(
            f"method must be a method name (DeleteBackup) or service/method "
            f"(cbr.backup.v1.BackupService/DeleteBackup), got {value[:40]!r}")
    return service, method


def check_text_filter(value: str, what: str) -> str:
    if len(value) > MAX_FILTER_CHARS:
        raise errors.InvalidAuditFilterError(f"{what} is longer than {MAX_FILTER_CHARS} characters")
    return value


def check_range(since: dt.datetime | None, until: dt.datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise errors.InvalidAuditFilterError("since must be before until")
