"""cbr-admin's rules: durations, roles and projects it accepts."""
from __future__ import annotations

import pytest

from cbr_cli.admin import AdminError, check_project, check_roles, parse_ttl


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("8h", 28800), ("7d", 604800),
                                           ("1w", 604800), ("1h30m", 5400), (" 2H ", 7200), ("366d", 366 * 86400)])
def test_ttl(text, seconds):
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "8x", "h", "8 h", "-1h", "1.5h", "367d", "8h-", "h8"])
def test_bad_ttl(text):
    with pytest.raises(AdminError):
        parse_ttl(text)


def test_roles_and_projects():
    assert check_roles(["cbr_readonly", "cbr_full_access", "cbr_readonly"]) == ["cbr_full_access", "cbr_readonly"]
    for roles in (["service"], ["region_peer"], ["cbr_readonly", "admin"]):
        with pytest.raises(AdminError, match="unknown role"):
            check_roles(roles)
    assert check_project("dev") == "dev"
    for project in ("", "a b", "x" * 129, "tab\there"):
        with pytest.raises(AdminError):
            check_project(project)
