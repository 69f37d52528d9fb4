"""Who sees which project's audit trail, and the filters of ListAuditEvents."""
from __future__ import annotations

import datetime as dt

import pytest

from cbr_vault.domain import audit, errors

FULL, READ, AUDITOR, SERVICE = (frozenset({r}) for r in ("cbr_full_access", "cbr_readonly", "cbr_auditor", "service"))


def test_a_projects_users_see_their_own_project():
    assert audit.visible_project("p1", FULL, "") == "p1"
    assert audit.visible_project("p1", READ, "p1") == "p1"
    with pytest.raises(errors.AuditScopeError):
        audit.visible_project("p1", FULL, "p2")


def test_the_auditor_and_services_see_any_project_or_all():
    assert audit.visible_project("ops", AUDITOR, "p2") == "p2"
    assert audit.visible_project("ops", AUDITOR, "") is None
    assert audit.visible_project("p1", SERVICE, "") is None


@pytest.mark.parametrize("text, parsed", [
    ("", ("", False)), ("ok", ("OK", False)), ("OK", ("OK", False)), ("error", ("", True)),
    ("invalid_argument", ("INVALID_ARGUMENT", False)), ("PERMISSION_DENIED", ("PERMISSION_DENIED", False)),
])
def test_outcomes(text, parsed):
    assert audit.parse_outcome(text) == parsed


def test_an_unknown_outcome_is_refused():
    with pytest.raises(errors.InvalidAuditFilterError, match="outcome must be"):
        audit.parse_outcome("failed")


@pytest.mark.parametrize("text, parsed", [
    ("", ("", "")), ("DeleteBackup", ("", "DeleteBackup")),
    ("cbr.backup.v1.BackupService/DeleteBackup", ("cbr.backup.v1.BackupService", "DeleteBackup")),
    ("/cbr.backup.v1.BackupService/DeleteBackup", ("cbr.backup.v1.BackupService", "DeleteBackup")),
])
def test_methods(text, parsed):
    assert audit.parse_method(text) == parsed


@pytest.mark.parametrize("text", ["delete backup", "deleteBackup", "x/DeleteBackup", "DeleteBackup/", "a" * 70])
def test_malformed_methods_are_refused(text):
    with pytest.raises(errors.InvalidAuditFilterError, match="method must be"):
        audit.parse_method(text)


def test_time_range():
    early, late = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    audit.check_range(early, late)
    audit.check_range(None, late)
    with pytest.raises(errors.InvalidAuditFilterError):
        audit.check_range(late, early)
    with pytest.raises(errors.InvalidAuditFilterError):
        audit.check_range(early, early)
